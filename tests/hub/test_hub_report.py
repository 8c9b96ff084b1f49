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
from govedge.core import cose, merkle
from govedge.core import report as method
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub import report as hubreport
from govedge.hub.gateways import Gateways
from govedge.hub.store import HubStore
from support import firmware, private_key, scalar, sec1
from support.hubkit import postgres  # noqa: F401 - the fixture

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
        store = HubStore(self.cfg.store)
        registry = Registry.load(self.folder / "registry.json")
        store.key_id_of = lambda r: registry.key_rule(r.device_id, r.key).key_id  # as the hub service does
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
    # the commitment is the RFC 9162 root (the tree checked against pymerkle) over the messages by sequence number
    assert made.body["readings"]["root"] == merkle.root([merkle.leaf_hash(m) for m in msgs])


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


# --- govedge verify-report: a good report holds, every tampering is named ---


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture
def reported(tmp_path):
    """A station with two days of readings (and another station's), its report and the hub's export."""
    s = Station(tmp_path / "hub")
    d1, d2 = utc("2026-03-04T00:00:00"), utc("2026-03-05T00:00:00")
    msgs = _full_hours(s, d1, range(24), "41.2", "20.3") + _full_hours(s, d2, range(20), "38.0", "19.0")
    msgs += [s.message(d1 + 60 * m, pm("5.0"), device=OTHER) for m in range(30)]
    s.store(msgs)
    proc = _cli("hub", "report", "--config", s.config, "--station", STATION, "--from", "2026-03-04", "--to",
                "2026-03-05", "--output", s.folder / "report.cbor")
    assert proc.returncode == 0, proc.stderr
    export = s.folder / "export.cbors"
    proc = _cli("hub", "export", "--config", s.config, "--format", "cose", "--output", export)
    assert proc.returncode == 0, proc.stderr
    return s, s.folder / "report.cbor", export


def _verify(s: Station, report: Path, export: Path, *extra) -> subprocess.CompletedProcess:
    return _cli("verify-report", report, "--readings", export, "--registry", s.folder / "registry.json",
                "--hub-key", s.hub_pub, *extra)


def _failed(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("FAILED")]


def _resigned(s: Station, report: Path, change, key=None) -> Path:
    """The report with its body changed by ``change`` and signed again (by the hub's key unless ``key``)."""
    rf = method.load_file(report.read_bytes())
    body = rf.body
    change(body)
    out = report.with_name("tampered.cbor")
    out.write_bytes(method.file_bytes(method.sign(key or s.hub_key, body)))
    return out


def _export_items(export: Path) -> list[bytes]:
    data = export.read_bytes()
    stream, items = io.BytesIO(data), []
    while stream.tell() < len(data):
        start = stream.tell()
        cbor2.load(stream)
        items.append(data[start:stream.tell()])
    return items


def test_verify_report_accepts_the_hubs_report(reported):
    s, report, export = reported
    proc = _verify(s, report, export)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok  hub_signature    ES256 by hub key" in proc.stdout
    assert "ok  commitment       2640 readings" in proc.stdout
    assert re.search(r"ok  figures          \d+ figures recomputed from the readings: all hold", proc.stdout)
    assert "--  anchor_receipt   the report carries no anchor receipt" in proc.stdout
    print(proc.stdout)


def test_verify_report_names_a_changed_figure(reported):
    s, report, export = reported

    def change(body):
        day = body["quantities"]["pm10"]["days"][0]
        day[1] = Decimal("40.9")

    proc = _verify(s, _resigned(s, report, change), export)
    assert proc.returncode == 1
    assert _failed(proc) == ["FAILED  figures: daily mean pm10 2026-03-04: report says 40.9, the readings give 41.2"]


def test_verify_report_names_a_dropped_reading(reported):
    s, report, export = reported
    items = _export_items(export)
    dropped = [i for i in items if cose.decode_envelope(i, 4096).kid == STATION][100]
    export.write_bytes(b"".join(i for i in items if i != dropped))
    proc = _verify(s, report, export)
    assert proc.returncode == 1
    failed = _failed(proc)
    assert f"FAILED  commitment: reading {STATION} #100 is used by the report, but it is not among the validly " \
           "signed readings given" in failed
    assert "FAILED  commitment: count of readings: report says 2640, the readings give 2639" in failed
    assert any(line.startswith("FAILED  commitment: Merkle root: report says ") for line in failed)
    assert any(line.startswith("FAILED  figures: hourly data capture pm10 2026-03-04T01:00Z: report says 60 slots")
               for line in failed)


def test_verify_report_names_a_reading_the_report_left_out(reported):
    s, report, export = reported
    extra = s.message(utc("2026-03-05T23:10:00"), pm("80.0"))  # signed by the station, in the period
    export.write_bytes(export.read_bytes() + extra)
    proc = _verify(s, report, export)
    assert proc.returncode == 1
    failed = _failed(proc)
    assert f"FAILED  commitment: reading {STATION} #2640 counts by the method, but the report leaves it out" in failed
    assert "FAILED  figures: hourly mean pm10 2026-03-05T23:00Z: report says none, the readings give 80.0" in failed


def test_verify_report_names_a_reading_whose_value_was_altered(reported):
    s, report, export = reported
    items = _export_items(export)
    target = next(i for i in items if cose.decode_envelope(i, 4096).kid == STATION)
    # 41.2 is 4([-1, 412]): 0x19 0x01 0x9c; make it 41.3 without the key
    altered = target.replace(bytes.fromhex("19019c"), bytes.fromhex("19019d"), 1)
    assert altered != target
    export.write_bytes(b"".join(altered if i == target else i for i in items))
    proc = _verify(s, report, export)
    assert proc.returncode == 1
    failed = _failed(proc)
    assert f"FAILED  readings: reading {STATION} #0: bad_signature: signature does not verify with the key(s) of " \
           f"device '{STATION}'" in failed
    assert "FAILED  commitment: count of readings: report says 2640, the readings give 2639" in failed


def test_verify_report_names_a_wrong_hub_signature(reported):
    s, report, export = reported
    other = private_key(scalar("not-the-hub"))
    proc = _verify(s, _resigned(s, report, lambda body: None, key=other), export)
    assert proc.returncode == 1
    assert _failed(proc) == [f"FAILED  hub_signature: the report's signature does not verify with the hub key given "
                             f"(the report names hub key {method.hub_key_id(s.hub_key.public_key())})"]


def test_verify_report_names_a_wrong_root(reported):
    s, report, export = reported

    def change(body):
        body["readings"]["root"] = bytes(32)

    proc = _verify(s, _resigned(s, report, change), export)
    assert proc.returncode == 1
    failed = _failed(proc)
    assert len(failed) == 1
    assert failed[0].startswith("FAILED  commitment: Merkle root: report says 0000000000000000..., the readings give ")


def test_verify_report_json_and_without_the_hub_key(reported):
    import json

    s, report, export = reported
    proc = _cli("verify-report", report, "--readings", export, "--registry", s.folder / "registry.json", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 0 and doc["faults"] == []
    assert {"part": "hub_signature", "status": "not checked",
            "text": f"hub key {method.hub_key_id(s.hub_key.public_key())}: not checked (give the hub's public key, "
                    "--hub-key)"} in doc["held"]


def test_a_revoked_keys_readings_do_not_count_at_the_hub_nor_at_the_verifier(tmp_path):
    s = Station(tmp_path / "hub")
    d1 = utc("2026-03-04T00:00:00")
    s.store(_full_hours(s, d1, range(2), "10.0"))
    registry = Registry.load(s.folder / "registry.json")
    registry.revoke(STATION, since="2026-03-04T01:00:00Z")
    registry.save()
    store = HubStore(s.cfg.store)
    with store.transaction():
        key = registry.devices[STATION].keys[0]
        assert store.flag_revoked(STATION, key.key_id, utc("2026-03-04T01:00:00")) == 60
    store.close()
    made = s.report(method.period_of("2026-03-04", "2026-03-04"))
    assert made.body["readings"]["count"] == 60 and made.left_out == {"flagged": 60, "untimed": 0}
    export = s.folder / "export.cbors"
    assert _cli("hub", "export", "--config", s.config, "--format", "cose", "--output", export).returncode == 0
    proc = _verify(s, made.path, export)
    assert proc.returncode == 0, proc.stdout
    assert "60 signed by a revoked or retired key, left out" in proc.stdout


def test_a_report_naming_an_impossible_period_or_time_is_refused_as_malformed(reported):
    s, report, export = reported
    for change in (lambda b: b.update(period=[0, 2 ** 62 // 86400 * 86400]), lambda b: b.update(made=2 ** 40),
                   lambda b: b.update(period=[86400, 86400])):
        proc = _verify(s, _resigned(s, report, change), export)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("govedge verify-report: ") and "is not" in proc.stderr, proc.stderr
    # signed by the hub's key, naming another key id
    proc = _verify(s, _resigned(s, report, lambda b: b.update(hub="0123456789abcdef")), export)
    assert proc.returncode == 1
    assert _failed(proc) == ["FAILED  hub_signature: the report names hub key 0123456789abcdef, but the key that "
                             f"signed it is {method.hub_key_id(s.hub_key.public_key())}"]


# --- the format: docs/REPORT.md's CDDL, checked with pycddl on a real report ---


def _cddl() -> str:
    return re.search(r"```cddl\n(.*?)```", DOC.read_text(), re.S).group(1)


def test_a_real_report_matches_the_documented_cddl(reported):
    import pycddl

    s, report, _ = reported
    data = report.read_bytes()
    pycddl.Schema("root = report-file\n" + _cddl()).validate_cbor(data)
    rf = method.load_file(data)
    pycddl.Schema("root = signed-report\n" + _cddl()).validate_cbor(rf.signed)
    pycddl.Schema("root = report-body\n" + _cddl()).validate_cbor(rf.envelope.payload)
    envelope = cbor2.loads(rf.signed).value
    pycddl.Schema("root = report-protected\n" + _cddl()).validate_cbor(envelope[0])
    # and a calendar year's, with annual means and verdicts
    s2 = Station(s.folder.parent / "year")
    s2.store(_year(s2, 2025, 36, 3))
    made = s2.report(method.year_period(2025), interval_s=3600)
    year_body = method.load_file(made.path.read_bytes()).envelope.payload
    pycddl.Schema("root = report-body\n" + _cddl()).validate_cbor(year_body)
    with pytest.raises(Exception):
        pycddl.Schema("root = report-body\n" + _cddl()).validate_cbor(cbor2.dumps({"v": 1}))


# --- the commands' errors: one line, no traceback ---


@pytest.mark.parametrize("args, words", [
    (("--station", STATION, "--from", "2026-13-01", "--to", "2026-12-31"), "--from '2026-13-01' is not a date"),
    (("--station", STATION, "--from", "2026-03-05", "--to", "2026-03-04"), "--to 2026-03-04 is before --from"),
    (("--station", STATION), "give the period"),
    (("--station", "esp32-9999", "--year", "2026"), "station 'esp32-9999' is not a device of the registry"),
])
def test_hub_report_errors_are_one_line(tmp_path, args, words):
    s = Station(tmp_path / "hub")
    proc = _cli("hub", "report", "--config", s.config, *args, "--output", tmp_path / "r.cbor")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert words in proc.stderr


def test_hub_report_without_a_key_says_how_to_make_one(tmp_path):
    s = Station(tmp_path / "hub")
    s.cfg.key.unlink()
    proc = _cli("hub", "report", "--config", s.config, "--station", STATION, "--year", "2026")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no such file (make it with govedge hub keygen --config hub.toml)" in proc.stderr
    proc = _cli("hub", "keygen", "--config", s.config)
    assert proc.returncode == 0, proc.stderr
    assert (s.folder / "hub-key.pem").stat().st_mode & 0o077 == 0
    assert "hub-key.pub.pem" in proc.stdout
    again = _cli("hub", "keygen", "--config", s.config)
    assert "there already, kept" in again.stdout


def test_verify_report_errors_are_one_line(reported, tmp_path):
    s, report, export = reported
    cases = [
        ((tmp_path / "missing.cbor", "--readings", export), "missing.cbor"),
        ((report, "--readings", tmp_path / "missing.cbors"), "missing.cbors"),
        ((export, "--readings", export), "not a report file"),
        ((report, "--readings", s.folder / "registry.json"), "not a CBOR sequence of signed readings"),
    ]
    for args, words in cases:
        proc = _cli("verify-report", *args, "--registry", s.folder / "registry.json")
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert words in proc.stderr, proc.stderr


def test_a_chain_that_does_not_answer_leaves_the_report_signed_and_says_how_to_anchor_it_later(tmp_path):
    from govedge.tools.dev.broker import free_port

    s = Station(tmp_path / "hub")
    with open(s.config, "a") as f:
        f.write(f'[anchor]\nbackend = "rest"\n[anchor.rest]\nurl = "http://127.0.0.1:{free_port()}"\n')
    s.store(_full_hours(s, utc("2026-03-04T00:00:00"), range(2), "12.5"))
    report = s.folder / "report.cbor"
    proc = _cli("hub", "report", "--config", s.config, "--station", STATION, "--from", "2026-03-04", "--to",
                "2026-03-04", "--output", report, "--wait", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"govedge hub report: {report} is signed and written, not anchored: unreachable: ")
    assert proc.stderr.strip().endswith(f"(govedge hub anchor-report --config {s.config} {report} tries again)")
    assert method.load_file(report.read_bytes()).receipt is None
    assert len(proc.stderr.strip().splitlines()) == 1


# --- anchored on a real chain: anvil ---


@pytest.mark.chain
def test_a_report_is_anchored_on_the_chain_and_checked_there(tmp_path):
    from support.chain import funded_key, start_anvil
    from govedge.anchor.evm import deploy

    from eth_account import Account

    from govedge.anchor.evm import read_key_file

    anvil = start_anvil(tmp_path / "anvil")
    try:
        operator = funded_key(anvil, tmp_path / "operator.key")
        contract = deploy(anvil.url, operator)
        s = Station(tmp_path / "hub")
        account_key = funded_key(anvil, s.folder / "anchor.key")
        account = Account.from_key(read_key_file(account_key)).address
        with open(s.config, "a") as f:
            f.write(f'[anchor]\nbackend = "evm"\n[anchor.evm]\nrpc_url = "{anvil.url}"\ncontract = "{contract}"\n'
                    'key_file = "anchor.key"\n')
        d1 = utc("2026-03-04T00:00:00")
        s.store(_full_hours(s, d1, range(24), "12.5", "7.5"))
        report = s.folder / "report.cbor"
        proc = _cli("hub", "report", "--config", s.config, "--station", STATION, "--from", "2026-03-04", "--to",
                    "2026-03-04", "--output", report, "--wait", "30")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "anchor      confirmed: evm eip155:31337, block" in proc.stdout
        rf = method.load_file(report.read_bytes())
        assert rf.receipt.confirmed and rf.receipt.root == method.anchor_root(rf.signed)
        assert rf.receipt.details["gateway"] == account
        # asked again, a confirmed receipt stays as it is
        before = report.read_bytes()
        assert _cli("hub", "anchor-report", "--config", s.config, report).returncode == 0
        assert report.read_bytes() == before
        export = s.folder / "export.cbors"
        assert _cli("hub", "export", "--config", s.config, "--format", "cose", "--output", export).returncode == 0
        offline = _verify(s, report, export)
        assert offline.returncode == 0, offline.stdout
        assert ": not checked on the chain" in offline.stdout
        proc = _verify(s, report, export, "--rpc", anvil.url, "--contract", contract, "--account", account)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"ok  chain            eip155:31337 holds the root in block {rf.receipt.block}, anchored by " \
               f"{account}: valid" in proc.stdout
        # anchored by another account than the one asked: named
        other = Account.create().address
        proc = _verify(s, report, export, "--rpc", anvil.url, "--contract", contract, "--account", other)
        assert proc.returncode == 1
        assert _failed(proc)[0].startswith("FAILED  chain: the chain does not hold root")
        # a receipt that claims another block: named
        from dataclasses import replace

        forged = replace(rf.receipt, block=rf.receipt.block + 5)
        report.write_bytes(method.file_bytes(rf.signed, forged))
        proc = _verify(s, report, export, "--rpc", anvil.url, "--contract", contract, "--account", account)
        assert proc.returncode == 1
        assert _failed(proc) == [f"FAILED  chain: the chain holds the root in block {rf.receipt.block} "
                                 f"({rf.receipt.reference}), the receipt says block {forged.block} "
                                 f"({forged.reference})"]
        # a chain that does not answer: could not check, exit 3
        anvil.stop()
        report.write_bytes(before)
        proc = _verify(s, report, export, "--rpc", anvil.url, "--contract", contract, "--account", account)
        assert proc.returncode == 3, proc.stdout + proc.stderr
    finally:
        anvil.stop()


# --- PostgreSQL gives the same report (its monthly partitions, the same queries) ---


@pytest.mark.postgres
def test_postgresql_and_sqlite_give_the_same_report(tmp_path, postgres):
    bodies, msgs = {}, None
    for name, url in (("sqlite", None), ("postgresql", postgres.new_database())):
        s = Station(tmp_path / name, store_url=url)
        if msgs is None:  # the same signed bytes in both (ECDSA signatures of this helper are randomised)
            msgs, _ = _minute_readings(s, 3)
            # across a month's end: two partitions on PostgreSQL
            msgs += _full_hours(s, utc("2026-02-28T00:00:00"), range(20), "33.3", "11.1")
            msgs += _full_hours(s, utc("2026-03-01T00:00:00"), range(20), "44.4", "12.2")
        s.store(msgs)
        made = hubreport.make(s.cfg, STATION, method.period_of("2026-02-10", "2026-03-01"), s.folder / "r.cbor", 60)
        made.body.pop("made")
        bodies[name] = made.body
    assert bodies["sqlite"] == bodies["postgresql"]
    assert bodies["sqlite"]["readings"]["count"] > 5000
