"""Reports: a station's figures computed by the hub from the readings it verified, signed, and checked again
by anyone from the device-signed originals (docs/REPORT.md).

The store is filled with real signed readings in real gateway batches; the figures are held against
hand-computed expectations at every boundary of the method (44 and 45 minutes, 17 and 18 valid hours,
50.0 and 50.1 ug/m3, 35 and 36 days, 18 and 19 days), and against pandas' resample."""

from __future__ import annotations

import datetime
import io
import re
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from govedge.core import batch as batchmod
from govedge.core import cose
from govedge.core import report as method
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub import report as hubreport
from govedge.hub.gateways import Gateways
from govedge.hub.store import HubStore
from support import firmware, private_key, scalar, sec1

STATION = "esp32-0101"
OTHER = "esp32-0102"
GATEWAY = "gw-report-test"
DOC = Path(__file__).resolve().parents[2] / "docs" / "REPORT.md"


def utc(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp())


class Station:
    """A hub folder (hub.toml, registry, gateways, key, SQLite store) and readings signed by the station's key,
    stored through signed gateway batches as the hub stores them."""

    def __init__(self, folder: Path, store_url: str | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        registry = Registry(path=folder / "registry.json")
        for device in (STATION, OTHER):
            registry.add(device, "esp32", ["sds011", "bme280"], sec1(scalar(device)))
        registry.save()
        self.gateway_key = private_key(scalar(GATEWAY))
        gateways = Gateways(path=folder / "gateways.json")
        gateways.add(GATEWAY, self.gateway_key.public_key())
        gateways.save()
        self.store_url = store_url or "hub.db"
        self.config = folder / "hub.toml"
        self.config.write_text('[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\n'
                               f'key = "hub-key.pem"\n[store]\nurl = "{self.store_url}"\n')
        self.batch_seq = 0
        self.seq = {STATION: 0, OTHER: 0}
        self.cfg = hubconfig.load(self.config)
        self.hub_key = private_key(scalar("hub-report-test"))
        self.cfg.key.write_bytes(self.hub_key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        self.hub_pub = folder / "hub-key.pub.pem"
        self.hub_pub.write_bytes(self.hub_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def message(self, t: int | None, measurements: list, device: str = STATION, seq: int | None = None) -> bytes:
        """A reading signed with the device's key: the firmware's own SenML pack, in the COSE envelope."""
        if seq is None:
            seq = self.seq[device]
            self.seq[device] += 1
        reading = firmware("reading")
        payload = reading.cbor.encode(reading.pack(seq, t, measurements))
        return cose.sign1(private_key(scalar(device)), device, payload)

    def store(self, messages: list[bytes]) -> None:
        store = HubStore(self.cfg.store if "://" in self.cfg.store else "sqlite://" + self.cfg.store)
        try:
            for i in range(0, len(messages), 500):
                cose_bytes, _ = batchmod.sign(self.gateway_key, GATEWAY, self.batch_seq, 1_764_400_000 + self.batch_seq,
                                              messages[i:i + 500], [], "raw")
                self.batch_seq += 1
                with store.transaction():
                    store.add_batch(batchmod.verify(cose_bytes, lambda g: [self.gateway_key.public_key()]))
        finally:
            store.close()

    def report(self, period: method.Period, interval_s: int = 60, name: str = "report.cbor") -> hubreport.Made:
        return hubreport.make(self.cfg, STATION, period, self.folder / name, interval_s)


def pm(pm10: str, pm2_5: str | None = None) -> list:
    """SDS011 measurements as the node signs them: decimal fractions of 0.1 ug/m3."""
    out = [("pm10", "ug/m3", (int(Decimal(pm10) * 10), -1))]
    if pm2_5 is not None:
        out.insert(0, ("pm2_5", "ug/m3", (int(Decimal(pm2_5) * 10), -1)))
    return out


def figures(made: hubreport.Made, name: str) -> dict:
    return made.body["quantities"][name]


def hours_of(q: dict) -> dict:
    return {h[0]: h[1:] for h in q["hours"]}


def days_of(q: dict) -> dict:
    return {d[0]: d[1:] for d in q["days"]}


# --- the method, at its boundaries ---


def test_an_hour_is_valid_with_45_minutes_of_readings_and_not_with_44(tmp_path):
    s = Station(tmp_path / "hub")
    h1, h2 = utc("2026-03-04T05:00:00"), utc("2026-03-04T06:00:00")
    # hour 1: minutes 0..44, values 10.0 .. 14.4 (0.1 a minute); hour 2: minutes 0..43, 20.0 each, and two
    # readings in minute 10 (one slot covered, both values in the mean)
    msgs = [s.message(h1 + 60 * m + 5, pm(str(Decimal("10.0") + Decimal(m) / 10))) for m in range(45)]
    msgs += [s.message(h2 + 60 * m, pm("20.0")) for m in range(44)] + [s.message(h2 + 630, pm("29.0"))]
    s.store(msgs)
    made = s.report(method.period_of("2026-03-04", "2026-03-04"))
    hours = hours_of(figures(made, "pm10"))
    # mean of 10.0 .. 14.4 = 12.2; 45 of 60 slots: valid
    assert hours[h1] == [Decimal("12.2"), 45, 45, True]
    # (44 * 20.0 + 29.0) / 45 = 20.2; 44 of 60 slots: not valid (75 % is 45 minutes)
    assert hours[h2] == [Decimal("20.2"), 44, 45, False]
    assert figures(made, "pm2_5")["hours"] == []
    assert made.body["readings"]["count"] == 90
    assert made.body["readings"]["seqs"] == [[0, 89]]
