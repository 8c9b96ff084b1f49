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


def _full_hours(s: Station, day: int, hours: range, value: str, pm2_5: str | None = None) -> list[bytes]:
    """A reading each minute of the given hours of a day."""
    return [s.message(day + 3600 * h + 60 * m, pm(value, pm2_5)) for h in hours for m in range(60)]


def test_a_day_is_valid_with_18_valid_hours_and_not_with_17(tmp_path):
    s = Station(tmp_path / "hub")
    d1, d2 = utc("2026-03-04T00:00:00"), utc("2026-03-05T00:00:00")
    # day 1: 18 full hours at 30.0 and an hour of 44 minutes at 90.0 (not valid: not in the daily mean)
    msgs = _full_hours(s, d1, range(18), "30.0") + [s.message(d1 + 20 * 3600 + 60 * m, pm("90.0")) for m in range(44)]
    # day 2: 17 full hours, 12.0 in the first 9 and 13.0 in the others
    msgs += _full_hours(s, d2, range(9), "12.0") + _full_hours(s, d2, range(9, 17), "13.0")
    s.store(msgs)
    made = s.report(method.period_of("2026-03-04", "2026-03-05"))
    days = days_of(figures(made, "pm10"))
    assert days[d1] == [Decimal("30.0"), 18]
    assert days[d2] == [None, 17]  # 17 valid hours of 24: no daily value
    m = figures(made, "pm10")["period_mean"]
    # mean of the 35 valid hourly means: (18 * 30 + 9 * 12 + 8 * 13) / 35 = 752 / 35 = 21.4857...
    assert m == {"mean": Decimal("21.5"), "valid_hours": 35, "hours": 48, "valid": False}
    assert "annual_mean" not in figures(made, "pm10")
    assert made.body["year"] is None
    # not a calendar year: the counts are for the period, no verdict
    assert {a["limit"]: a["exceeded"] for a in figures(made, "pm10")["assessment"]} == \
        {"2008/50/EC:pm10:day": None, "2008/50/EC:pm10:year": None, "2024/2881:pm10:day": None,
         "2024/2881:pm10:year": None}


def test_a_day_at_50_is_not_over_the_limit_value_and_a_day_at_50_1_is(tmp_path):
    s = Station(tmp_path / "hub")
    d1, d2, d3 = (utc(f"2026-03-0{i}T00:00:00") for i in (4, 5, 6))
    msgs = _full_hours(s, d1, range(24), "50.0")
    msgs += _full_hours(s, d2, range(24), "50.1")
    # day 3: 12 hours at 50.0 and 12 at 50.1: 50.05 rounds half away from zero to 50.1, over 50
    msgs += _full_hours(s, d3, range(12), "50.0") + _full_hours(s, d3, range(12, 24), "50.1")
    s.store(msgs)
    made = s.report(method.period_of("2026-03-04", "2026-03-06"))
    q = figures(made, "pm10")
    assert [d[1] for d in q["days"]] == [Decimal("50.0"), Decimal("50.1"), Decimal("50.1")]
    over = {a["limit"]: a.get("days_over") for a in q["assessment"]}
    assert over["2008/50/EC:pm10:day"] == 2
    assert over["2024/2881:pm10:day"] == 3  # 45 ug/m3 from 2030


def _year(s: Station, year: int, pm10_over: int, pm2_5_over: int) -> list[bytes]:
    """A reading an hour (interval 3600 s: one slot an hour) for every hour of the year; the first
    ``pm10_over`` days at 60.0 ug/m3 PM10, the others at 20.0; the first ``pm2_5_over`` days at 30.0 PM2.5,
    the others 8.0."""
    start = utc(f"{year}-01-01T00:00:00")
    days = (utc(f"{year + 1}-01-01T00:00:00") - start) // 86400
    return [s.message(start + 86400 * d + 3600 * h + 1800,
                      pm("60.0" if d < pm10_over else "20.0", "30.0" if d < pm2_5_over else "8.0"))
            for d in range(days) for h in range(24)]


@pytest.mark.parametrize("pm10_over, pm2_5_over", [(35, 18), (36, 19)])
def test_days_over_the_daily_limit_values_are_counted_against_35_and_18_a_calendar_year(tmp_path, pm10_over,
                                                                                          pm2_5_over):
    s = Station(tmp_path / "hub")
    s.store(_year(s, 2026, pm10_over, pm2_5_over))
    made = s.report(method.year_period(2026), interval_s=3600)
    assert made.body["year"] == 2026 and made.body["readings"]["count"] == 8760
    q10, q25 = figures(made, "pm10"), figures(made, "pm2_5")
    assert "period_mean" not in q10
    # annual mean of the hourly means, by hand: (n * 60 + (365 - n) * 20) / 365
    assert q10["annual_mean"] == {"mean": method.round_half_up(Fraction(pm10_over * 60 + (365 - pm10_over) * 20, 365),
                                                               Decimal("0.1")),
                                  "valid_hours": 8760, "hours": 8760, "valid": True}
    a10 = {a["limit"]: a for a in q10["assessment"]}
    assert a10["2008/50/EC:pm10:day"] == {"limit": "2008/50/EC:pm10:day", "days_over": pm10_over,
                                          "exceeded": pm10_over > 35}
    assert a10["2024/2881:pm10:day"]["exceeded"] is True  # 45 ug/m3, 18 days allowed
    assert a10["2008/50/EC:pm10:year"]["exceeded"] is False  # 23.8 or 23.9 < 40
    assert a10["2024/2881:pm10:year"]["exceeded"] is True  # > 20
    a25 = {a["limit"]: a for a in q25["assessment"]}
    assert a25["2024/2881:pm2_5:day"] == {"limit": "2024/2881:pm2_5:day", "days_over": pm2_5_over,
                                          "exceeded": pm2_5_over > 18}
    # (n * 30 + (365 - n) * 8) / 365: 9.08 or 9.15, under 10 and 25
    assert {a25["2008/50/EC:pm2_5:year"]["exceeded"], a25["2024/2881:pm2_5:year"]["exceeded"]} == {False}


def test_weather_gets_hourly_means_in_its_own_units_and_other_units_do_not_count(tmp_path):
    s = Station(tmp_path / "hub")
    h = utc("2026-07-01T12:00:00")
    msgs = [s.message(h + 60 * m, [("temp", "Cel", (2150 + m, -2)), ("hum", "%RH", (4820, -2)),
                                   ("press", "Pa", 100800 + m)]) for m in range(60)]
    msgs.append(s.message(h + 30, [("temp", "K", 29465)]))  # another unit: not the quantity
    msgs.append(s.message(None, pm("99.0")))  # no node time: cannot be placed in an hour
    s.store(msgs)
    made = s.report(method.period_of("2026-07-01", "2026-07-01"))
    assert figures(made, "temp")["hours"] == [[h, Decimal("21.80"), 60, 60, True]]  # 21.50 + 0.295
    assert figures(made, "hum")["hours"] == [[h, Decimal("48.20"), 60, 60, True]]
    assert figures(made, "press")["hours"] == [[h, Decimal("100830"), 60, 60, True]]  # 100829.5 rounds up
    assert made.body["readings"]["count"] == 60
    assert "days" not in figures(made, "temp")


def _minute_readings(s: Station, seed: int) -> tuple[list[bytes], list[tuple[int, Decimal]]]:
    """Three days of PM10 readings, about one a minute with jitter, gaps and an outage; (time, value) kept."""
    import random

    rnd = random.Random(seed)
    start = utc("2026-02-10T00:00:00")
    msgs, kept = [], []
    t = start + 7
    while t < start + 3 * 86400:
        if not (start + 86400 + 5 * 3600 <= t < start + 86400 + 13 * 3600) and rnd.random() > 0.2:
            value = Decimal(rnd.randint(0, 1200)) / 10
            msgs.append(s.message(t, pm(str(value))))
            kept.append((t, value))
        t += rnd.choice((40, 55, 60, 60, 60, 65, 90, 140))
    return msgs, kept


def test_means_agree_with_pandas_resample(tmp_path):
    pd = pytest.importorskip("pandas")
    s = Station(tmp_path / "hub")
    msgs, kept = _minute_readings(s, 7)
    s.store(msgs)
    made = s.report(method.period_of("2026-02-10", "2026-02-12"))
    q = figures(made, "pm10")
    frame = pd.DataFrame({"v": [float(v) for _, v in kept]},
                         index=pd.to_datetime([t for t, _ in kept], unit="s", utc=True))
    hourly = frame["v"].resample("1h").mean().dropna()
    minutes = frame.index.floor("1min").to_series().groupby(frame.index.floor("1h")).nunique()
    ours = {h[0]: h for h in q["hours"]}
    assert len(ours) == len(hourly)
    for at, mean in hourly.items():
        h = ours[int(at.timestamp())]
        assert abs(float(h[1]) - mean) <= 0.05 + 1e-9
        assert h[2] == minutes[at] and h[4] == (minutes[at] >= 45)
    valid = hourly[minutes.reindex(hourly.index) >= 45]
    daily = valid.resample("1D").agg(["mean", "count"])
    for at, row in daily.iterrows():
        d = days_of(q)[int(at.timestamp())]
        assert d[1] == row["count"]
        if row["count"] >= 18:
            assert abs(float(d[0]) - row["mean"]) <= 0.05 + 1e-9
        else:
            assert d[0] is None


def test_means_agree_with_a_second_computation_in_exact_fractions(tmp_path):
    s = Station(tmp_path / "hub")
    msgs, kept = _minute_readings(s, 11)
    s.store(msgs)
    made = s.report(method.period_of("2026-02-10", "2026-02-12"))
    q = figures(made, "pm10")
    # written another way: group by (day, hour) through datetime, count distinct minutes, exact fractions
    groups: dict = {}
    for t, v in kept:
        dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        g = groups.setdefault((dt.date(), dt.hour), {"values": [], "minutes": set()})
        g["values"].append(Fraction(v))
        g["minutes"].add(dt.minute)
    per_day: dict = {}
    for (day, hour), g in sorted(groups.items()):
        mean = sum(g["values"]) / len(g["values"])
        start = int(datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.timezone.utc).timestamp())
        assert hours_of(q)[start][:3] == [method.round_half_up(mean, Decimal("0.1")), len(g["minutes"]),
                                          len(g["values"])]
        if len(g["minutes"]) >= 45:
            per_day.setdefault(day, []).append(mean)
    for day, means in per_day.items():
        start = int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp())
        expected = method.round_half_up(sum(means) / len(means), Decimal("0.1")) if len(means) >= 18 else None
        assert days_of(q)[start] == [expected, len(means)]
