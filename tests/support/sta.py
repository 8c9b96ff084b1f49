"""A hub store the SensorThings tests read: devices with sensors and location histories in a registry, two days
of their signed readings in batches of a gateway, an epoch for the first batches, and what each test
expects, computed here from the readings as they were signed (not from the store). With ``pm_year``, one more
station (YEAR_STATION, whose place is written as markup: it must stay text) with a year of hourly particulate
matter readings, some days short of valid hours and a month without any, for the dashboard's calendar."""

from __future__ import annotations

import calendar
import contextlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from govedge.anchor import Receipt
from govedge.core import batch
from govedge.core.epoch import Epoch, head_of, sign_epoch, verify_epoch
from govedge.core.registry import Registry
from govedge.hub.gateways import Gateways
from govedge.hub.store import HubStore
from support import firmware, private_key, scalar, sec1

GATEWAY = "gw-sta-01"
T0 = calendar.timegm((2026, 3, 1, 0, 0, 0))  # the first reading's time
STEP = 600  # a reading every 10 minutes
PER_DEVICE = 288  # two days
PER_BATCH = 24
UNTIMED = 5  # the first readings of esp32-0003 carry no time: the node's clock was not set yet

DEVICES = {
    # device: (sensors, locations: (lat, lon, height, place, since))
    "esp32-0001": (["bme280", "sds011"], [(51.962944, 7.625519, 62, "Domplatz, Münster", "2026-01-01T00:00:00Z"),
                                          (51.9625, 7.6282, None, "Prinzipalmarkt, Münster",
                                           "2026-03-02T00:00:00Z")]),
    "esp32-0002": (["bme280"], [(50.9413, 6.9583, None, "Roncalliplatz, Köln", "2026-01-01T00:00:00Z")]),
    "esp32-0003": (["bme280"], []),
}


YEAR_STATION = "esp32-0004"
YEAR_PLACE = "<b>Friedensplatz</b>, Dortmund <img src=x onerror=alert(1)>"
YEAR_POSITION = (51.5136, 7.4653)  # lat, lon: between Köln and Münster, on both axes
PM_YEAR = 2025
PM_YEAR_T0 = calendar.timegm((PM_YEAR, 1, 1, 0, 0, 0))


def pm_year_values(day: int, hour: int) -> list[tuple] | None:
    """The year station's reading of that hour (day of the year from 0), or None for an hour without one: every
    13th day has only 16 hours (too few for a daily mean), November has none. Daily means of PM10 go from 20
    to 64 ug/m3, of PM2.5 half that: days over and under each daily limit value."""
    if calendar.timegm((PM_YEAR, 11, 1, 0, 0, 0)) <= PM_YEAR_T0 + day * 86400 < calendar.timegm((PM_YEAR, 12, 1, 0,
                                                                                                   0, 0)):
        return None
    if day % 13 == 5 and hour < 8:
        return None
    base = 200 + (day * 37) % 450  # tenths of ug/m3
    swing = (hour % 3 - 1) * 50  # hours of -5, 0 and +5 ug/m3 around the day's level
    return [("pm2_5", "ug/m3", ((base + swing) // 2, -1)), ("pm10", "ug/m3", (base + swing, -1))]


@dataclass(frozen=True)
class Signed:
    device: str
    seq: int
    time: int | None  # as signed
    at: float  # the node's time, else the batch's
    values: dict  # quantity -> the exact value (Decimal or int)
    gateway: str
    batch: int
    leaf: int


def values_of(device: str, seq: int) -> list[tuple]:
    out = [("temp", "Cel", (1800 + (seq * 37) % 700 - (400 if device == "esp32-0002" else 0), -2)),
           ("hum", "%RH", (4000 + (seq * 13) % 3000, -2)),
           ("press", "Pa", 100500 + seq)]
    if device == "esp32-0001":
        out += [("pm2_5", "ug/m3", ((seq * 7) % 400, -1)), ("pm10", "ug/m3", ((seq * 11) % 900, -1))]
    return out


def exact(value) -> Decimal | int:
    if isinstance(value, tuple):
        mantissa, exponent = value
        return Decimal(mantissa).scaleb(exponent)
    return value


class StaWorld:
    """The registry, gateways file, store and hub.toml in ``folder``; ``signed`` what went in."""

    def __init__(self, folder: Path, store_url: str | None = None, pm_year: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        registry = Registry(path=folder / "registry.json")
        for device, (sensors, locations) in DEVICES.items():
            registry.add(device, "esp32", sensors, sec1(scalar(device)))
            for lat, lon, height, place, since in locations:
                registry.locate(device, lat, lon, height, place, since=since)
        if pm_year:
            registry.add(YEAR_STATION, "esp32", ["sds011"], sec1(scalar(YEAR_STATION)))
            registry.locate(YEAR_STATION, *YEAR_POSITION, None, YEAR_PLACE, since="2024-12-01T00:00:00Z")
        registry.save()
        self.gateway_key = private_key(scalar(GATEWAY))
        gateways = Gateways(path=folder / "gateways.json")
        gateways.add(GATEWAY, self.gateway_key.public_key())
        gateways.save()
        self.store_url = store_url or str(folder / "hub.db")
        (folder / "hub.toml").write_text(
            f'[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\n[store]\nurl = "{self.store_url}"\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\nclient_id = "hub-sta"\n')
        self.config = folder / "hub.toml"
        self.signed: list[Signed] = []
        self.proven_batches = 0
        self._fill()
        if pm_year:
            self._fill_pm_year()

    def keys(self, gateway_id: str) -> list:
        return [self.gateway_key.public_key()] if gateway_id == GATEWAY else []

    def _fill(self) -> None:
        reading = firmware("reading")
        messages: list[tuple[str, int, int | None, bytes]] = []
        for seq in range(PER_DEVICE):
            for device in DEVICES:
                t = None if device == "esp32-0003" and seq < UNTIMED else T0 + seq * STEP
                msg = reading.signed_reading(scalar(device), device, seq, t, values_of(device, seq))
                messages.append((device, seq, t, msg))
        store = HubStore(self.store_url)
        batches = []
        try:
            for b, start in enumerate(range(0, len(messages), PER_BATCH)):
                part = messages[start:start + PER_BATCH]
                created = T0 + (start // len(DEVICES)) * STEP + 60
                cose, _root = batch.sign(self.gateway_key, GATEWAY, b, created, [m for *_, m in part], [], "raw")
                verified = batch.verify(cose, self.keys)
                with store.transaction():
                    assert store.add_batch(verified) == {}
                batches.append(cose)
                for leaf, (device, seq, t, _msg) in enumerate(part):
                    self.signed.append(Signed(device, seq, t, float(t if t is not None else created),
                                              {n: exact(v) for n, _u, v in values_of(device, seq)}, GATEWAY, b, leaf))
            # the first half of the batches in an anchored epoch: their readings have proofs, the others not yet
            self.proven_batches = len(batches) // 2
            heads = tuple(head_of(batch.verify(c, self.keys)) for c in batches[:self.proven_batches])
            epoch = Epoch(GATEWAY, 0, heads, None)
            receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "ab" * 32, block=812,
                              block_time=T0 + 86400)
            record = sign_epoch(self.gateway_key, epoch, 0, self.proven_batches - 1, receipt)
            with store.transaction():
                store.add_epoch(verify_epoch(record, self.keys))
        finally:
            store.close()

    def _fill_pm_year(self) -> None:
        reading = firmware("reading")
        messages = []
        for day in range(365):
            for hour in range(24):
                values = pm_year_values(day, hour)
                if values is not None:
                    t = PM_YEAR_T0 + day * 86400 + hour * 3600 + 600
                    seq = day * 24 + hour
                    messages.append((seq, t, values, reading.signed_reading(scalar(YEAR_STATION), YEAR_STATION, seq,
                                                                             t, values)))
        store = HubStore(self.store_url)
        first = max(s.batch for s in self.signed) + 1
        try:
            for n, start in enumerate(range(0, len(messages), 240)):
                part = messages[start:start + 240]
                cose, _root = batch.sign(self.gateway_key, GATEWAY, first + n, part[-1][1] + 60,
                                         [m for *_, m in part], [], "raw")
                with store.transaction():
                    assert store.add_batch(batch.verify(cose, self.keys)) == {}
                for leaf, (seq, t, values, _msg) in enumerate(part):
                    self.signed.append(Signed(YEAR_STATION, seq, t, float(t), {q: exact(v) for q, _u, v in values},
                                              GATEWAY, first + n, leaf))
        finally:
            store.close()

    # -- what the tests expect -------------------------------------------------------------------------------

    def observations(self, device: str | None = None, quantity: str | None = None) -> list[tuple[Signed, str]]:
        return [(s, q) for s in self.signed for q in s.values
                if (device is None or s.device == device) and (quantity is None or q == quantity)]


@contextlib.contextmanager
def hub_web(world: StaWorld):
    """`govedge hub web` over the world's store, started and serving: (the process, its port)."""
    from govedge.tools.dev.broker import free_port
    from support import wait_until
    from support.deploy import CliProcess

    port = free_port()
    web = CliProcess(["hub", "web", "--config", str(world.config), "--host", "127.0.0.1", "--port", str(port)],
                     world.folder / "web.log")
    web.start()
    try:
        wait_until(lambda: "the status page on" in web.log, what="the hub's web service", detail=lambda: web.log)
        yield web, port
    finally:
        web.stop()
