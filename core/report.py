"""Verifiable derived reports: a station's air quality and weather figures of a period, computed from the
device-signed readings, signed by the hub, and checkable by anyone from the same signed readings.

The method (docs/REPORT.md, every rule with its source):

- which readings count: the station's readings with a node time inside the period that hold at least one
  of the report's quantities in its unit as a number (``countable``); the hub leaves out readings it
  flagged (a revoked key; a verifier finds the same with the registry), the verifier also any whose
  signature does not verify;
- hourly means of every quantity, with their data capture: the hour is cut into slots of the station's
  reading interval, a slot is covered when a reading is timed in it, and an hour is valid with 75 % of its
  slots covered (2008/50/EC, Annex VII A.2 and Annex XI A: "75 % (i.e. 45 minutes)");
- for PM10 and PM2.5, daily means of the valid hourly means, valid with 18 valid hours (75 % of the
  hourly averages, 2008/50/EC Annex XI A), the days over each daily limit value, and the mean of the
  period (the annual mean when the period is a calendar year) of the valid hourly means, valid with
  90 % of the period's hours valid (2008/50/EC Annex XI A; Annex I: minimum data capture 90 %);
- every mean is computed exactly (decimal sums, rational division) and rounded once, half away from zero,
  to the quantity's resolution (``QUANTITIES``); a day is over a limit value when its rounded mean is
  above it, so 50.0 is not over 50 and 50.1 is.

The report itself (``body``) is deterministic CBOR in a COSE_Sign1 of the hub's key (govedge.core.cose);
it commits to the exact readings used with an RFC 9162 Merkle root over their signed bytes in sequence
number order (govedge.core.merkle). ``verify`` recomputes everything from a set of signed readings and
names each input or figure that does not hold.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import cbor2

from . import cose, merkle, wire
from .receipt import Receipt
from .registry import key_id as _key_id_of_hex

FORMAT_VERSION = 1
METHOD = "govedge-report/1"  # the rules above; a change to any of them is a new method identifier
MAX_REPORT_BYTES = 64 * 1024 * 1024  # a year of hourly figures of five quantities is about 1 MB
REPORT_SIGNER = cose.Signer("unknown_hub", "no key for hub {kid!r}",
                            "report signature does not verify with the hub key {kid!r}")
INDICATIVE = ("Low-cost sensors (SDS011 for particulate matter, BME280 for weather) give indicative "
              "measurements, not measurements by the reference methods of Directive 2008/50/EC Annex VI (Directive "
              "(EU) 2024/2881 Annex VI); their data quality objectives are those of indicative measurements "
              "(2008/50/EC Annex I A: uncertainty 50 %, minimum data capture 90 %, minimum time coverage 14 % for "
              "particulate matter). The comparison with limit values below is for information, not an assessment "
              "under the directives.")


@dataclass(frozen=True)
class Quantity:
    unit: str  # SenML unit, as the node signs it (docs/FORMAT.md)
    resolution: Decimal  # what figures are rounded to: the sensor's resolution as sent
    daily: bool  # daily means, period mean and limit values (particulate matter)


QUANTITIES = {
    "pm10": Quantity("ug/m3", Decimal("0.1"), True),
    "pm2_5": Quantity("ug/m3", Decimal("0.1"), True),
    "temp": Quantity("Cel", Decimal("0.01"), False),
    "hum": Quantity("%RH", Decimal("0.01"), False),
    "press": Quantity("Pa", Decimal("1"), False),
}


@dataclass(frozen=True)
class Limit:
    id: str
    quantity: str
    averaging: str  # "day" or "calendar year"
    value: Decimal  # ug/m3
    allowed: int | None  # days over the daily value allowed in a calendar year
    since: str  # the date from which it applies
    source: str

    def to_body(self) -> dict:
        d = {"id": self.id, "quantity": self.quantity, "averaging": self.averaging, "value": self.value,
             "from": self.since, "source": self.source}
        if self.allowed is not None:
            d["allowed"] = self.allowed
        return d


# the limit values for the protection of human health (docs/REPORT.md, "Limit values", has the sources)
LIMITS = (
    Limit("2008/50/EC:pm10:day", "pm10", "day", Decimal(50), 35, "2005-01-01",
          "Directive 2008/50/EC, Annex XI B: 50 ug/m3, not to be exceeded more than 35 times a calendar year"),
    Limit("2008/50/EC:pm10:year", "pm10", "calendar year", Decimal(40), None, "2005-01-01",
          "Directive 2008/50/EC, Annex XI B: 40 ug/m3"),
    Limit("2008/50/EC:pm2_5:year", "pm2_5", "calendar year", Decimal(25), None, "2015-01-01",
          "Directive 2008/50/EC, Annex XIV E: 25 ug/m3"),
    Limit("2024/2881:pm10:day", "pm10", "day", Decimal(45), 18, "2030-01-01",
          "Directive (EU) 2024/2881, Annex I: 45 ug/m3, not to be exceeded more than 18 times a calendar year"),
    Limit("2024/2881:pm10:year", "pm10", "calendar year", Decimal(20), None, "2030-01-01",
          "Directive (EU) 2024/2881, Annex I: 20 ug/m3"),
    Limit("2024/2881:pm2_5:day", "pm2_5", "day", Decimal(25), 18, "2030-01-01",
          "Directive (EU) 2024/2881, Annex I: 25 ug/m3, not to be exceeded more than 18 times a calendar year"),
    Limit("2024/2881:pm2_5:year", "pm2_5", "calendar year", Decimal(10), None, "2030-01-01",
          "Directive (EU) 2024/2881, Annex I: 10 ug/m3"),
)

HOUR_S = 3600
DAY_S = 86400
LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z: the last time a report may name
VALID_HOUR = Fraction(3, 4)  # of the hour's slots (2008/50/EC Annex XI A: 75 %, i.e. 45 minutes)
VALID_DAY_HOURS = 18  # valid hourly means of a day (Annex XI A: 75 % of the hourly averages)
VALID_PERIOD = Fraction(9, 10)  # of the period's hours valid (Annex XI A, annual mean: 90 %)
DEFAULT_INTERVAL_S = 60  # a node's reading interval unless provisioned otherwise (govedge provision --interval)
# sums are exact: any finite double (5e-324 .. 1.8e308, at most 17 digits) or decimal fraction of the wire format
# added up fits in 800 digits; Inexact would be raised rather than a sum rounded
_EXACT = Context(prec=800, Emin=-999999, Emax=999999, traps=[Inexact])


class ReportError(cose.WireError):
    """A report that is not one (its format), or a period or station that cannot be reported on."""


# --- the period ---


@dataclass(frozen=True)
class Period:
    start: int  # seconds since 1970, a UTC midnight
    end: int  # a later UTC midnight: the period is start <= t < end

    @property
    def year(self) -> int | None:
        """The calendar year when the period is exactly one."""
        first, after = _date(self.start), _date(self.end)
        if first.month == first.day == 1 and after == first.replace(year=first.year + 1):
            return first.year
        return None

    @property
    def hours(self) -> int:
        return (self.end - self.start) // HOUR_S

    def describe(self) -> str:
        last = _date(self.end - DAY_S)
        return str(self.year) if self.year else f"{_date(self.start).isoformat()} .. {last.isoformat()}"


def _date(t: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).date()


def _midnight(d: datetime.date) -> int:
    return int(datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc).timestamp())


def parse_date(text: str, what: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ReportError("bad_period", f"{what} {text!r} is not a date like 2026-01-31") from None


def period_of(first: str, last: str) -> Period:
    """Whole UTC days from ``first`` through ``last``, both included (YYYY-MM-DD)."""
    a, b = parse_date(first, "--from"), parse_date(last, "--to")
    if b < a:
        raise ReportError("bad_period", f"--to {last} is before --from {first}")
    if a.year < 1970 or b >= datetime.date(9999, 12, 31):
        raise ReportError("bad_period", f"the period {first} .. {last} is not within 1970-01-01 .. 9999-12-30")
    return Period(_midnight(a), _midnight(b + datetime.timedelta(days=1)))


def year_period(year: int) -> Period:
    if not 1970 <= year <= 9998:
        raise ReportError("bad_period", f"--year {year} is not a year from 1970 to 9998")
    return Period(_midnight(datetime.date(year, 1, 1)), _midnight(datetime.date(year + 1, 1, 1)))


# --- which values count ---


def exact(value) -> Decimal | None:
    """A measurement's value as the exact decimal it is written as (a float as its shortest text, as the hub
    stores and exports it), or None when it is no number the report counts."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    d = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
    return d if d.is_finite() else None


def countable(name: str, unit: str | None, value) -> Decimal | None:
    """The value of a measurement that counts in a report: one of QUANTITIES, in its unit, a number."""
    q = QUANTITIES.get(name)
    if q is None or unit != q.unit:
        return None
    return exact(value)


def round_half_up(x: Fraction, step: Decimal) -> Decimal:
    """``x`` rounded to a multiple of ``step``, halves away from zero (DIN 1333: 50.05 -> 50.1, -0.05 -> -0.1)."""
    q = x / Fraction(step)
    n = (abs(q.numerator) * 2 + q.denominator) // (2 * q.denominator)
    n = -n if q < 0 else n
    exponent = step.as_tuple().exponent
    return Decimal(n).scaleb(exponent) if n else Decimal(0).scaleb(exponent)


# --- the figures ---


class Figures:
    """The figures of one station and period, from values given one at a time (in any order)."""

    def __init__(self, period: Period, interval_s: int = DEFAULT_INTERVAL_S):
        if not (isinstance(interval_s, int) and 1 <= interval_s <= HOUR_S and HOUR_S % interval_s == 0):
            raise ReportError("bad_interval", f"the reading interval {interval_s!r} s does not divide an hour "
                                              "into whole slots (1, 2, 5, 10, 15, 20, 30, 60, ... 3600)")
        self.period = period
        self.interval_s = interval_s
        self.slots = HOUR_S // interval_s
        self._hours: dict[str, dict[int, list]] = {name: {} for name in QUANTITIES}  # hour -> [sum, n, slots]

    def add(self, name: str, time: float, value: Decimal) -> None:
        t = float(time)
        hour = int(t // HOUR_S) * HOUR_S
        slot = 1 << int((t - hour) // self.interval_s)
        acc = self._hours[name].get(hour)
        if acc is None:
            self._hours[name][hour] = [value, 1, slot]
        else:
            acc[0] = _EXACT.add(acc[0], value)
            acc[1] += 1
            acc[2] |= slot

    def body(self) -> dict:
        """The report's "quantities": every quantity of QUANTITIES, with no figures when it has no readings."""
        return {name: self._quantity(name, q) for name, q in QUANTITIES.items()}

    def _quantity(self, name: str, q: Quantity) -> dict:
        hours, valid_means = [], {}
        for hour in sorted(self._hours[name]):
            total, n, slots = self._hours[name][hour]
            mean = Fraction(total) / n
            covered = slots.bit_count()
            valid = covered >= VALID_HOUR * self.slots
            hours.append([hour, round_half_up(mean, q.resolution), covered, n, valid])
            if valid:
                valid_means[hour] = mean
        out = {"unit": q.unit, "resolution": q.resolution, "hours": hours}
        if not q.daily:
            return out
        by_day: dict[int, list[Fraction]] = {}
        for hour, _, _, _, _ in hours:
            by_day.setdefault(hour // DAY_S * DAY_S, [])
        for hour, mean in valid_means.items():
            by_day[hour // DAY_S * DAY_S].append(mean)
        days = []
        for day in sorted(by_day):
            means = by_day[day]
            mean = round_half_up(sum(means, Fraction(0)) / len(means), q.resolution) \
                if len(means) >= VALID_DAY_HOURS else None
            days.append([day, mean, len(means)])
        out["days"] = days
        valid_hours = len(valid_means)
        period_valid = valid_hours >= VALID_PERIOD * self.period.hours
        period_mean = round_half_up(sum(valid_means.values(), Fraction(0)) / valid_hours, q.resolution) \
            if valid_hours else None
        out["annual_mean" if self.period.year else "period_mean"] = {
            "mean": period_mean, "valid_hours": valid_hours, "hours": self.period.hours, "valid": period_valid}
        assessment = []
        for limit in LIMITS:
            if limit.quantity != name:
                continue
            if limit.averaging == "day":
                over = sum(1 for _, mean, _ in days if mean is not None and mean > limit.value)
                if not self.period.year:
                    exceeded = None  # the allowed count is per calendar year
                elif over > limit.allowed:
                    exceeded = True
                else:
                    exceeded = False if period_valid else None  # too little data to say it was not
                assessment.append({"limit": limit.id, "days_over": over, "exceeded": exceeded})
            else:
                exceeded = (period_mean > limit.value) if self.period.year and period_valid else None
                assessment.append({"limit": limit.id, "exceeded": exceeded})
        out["assessment"] = assessment
        return out


# --- the readings it commits to ---


class Commitment:
    """The readings a report used, given in sequence number order: their count, their sequence numbers
    (as runs), and the RFC 9162 root over their signed bytes (leaf = SHA-256(0x00 || message))."""

    def __init__(self):
        self._root = merkle.RootOfStream()
        self.runs: list[list[int]] = []
        self.last: int | None = None

    def add(self, seq: int, message: bytes) -> None:
        self.add_leaf(seq, merkle.leaf_hash(message))

    def add_leaf(self, seq: int, leaf_hash: bytes) -> None:
        if self.last is not None and seq <= self.last:
            raise ValueError(f"readings must come in increasing sequence numbers: #{seq} after #{self.last}")
        self.last = seq
        self._root.append(leaf_hash)
        if self.runs and self.runs[-1][1] == seq - 1:
            self.runs[-1][1] = seq
        else:
            self.runs.append([seq, seq])

    @property
    def count(self) -> int:
        return self._root.size

    def body(self) -> dict:
        return {"count": self.count, "root": self._root.root(), "seqs": self.runs}


# --- the signed report ---


def hub_key_id(public_key) -> str:
    """The hub key's id, the report's kid: the first 16 hex digits of its x coordinate (as a device key's)."""
    from cryptography.hazmat.primitives import serialization

    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _key_id_of_hex(point.hex())


def body(station: str, period: Period, interval_s: int, figures: Figures, readings: Commitment, hub: str,
         made: int) -> dict:
    return {
        "v": FORMAT_VERSION, "method": METHOD, "station": station, "period": [period.start, period.end],
        "year": period.year, "interval_s": interval_s, "measurements": "indicative", "note": INDICATIVE,
        "limits": [limit.to_body() for limit in LIMITS], "quantities": figures.body(),
        "readings": readings.body(), "hub": hub, "made": made,
    }


def sign(key, report_body: dict) -> bytes:
    """The report as the hub's COSE_Sign1 (kid: its key id), payload deterministic CBOR (RFC 8949 4.2.1)."""
    return cose.sign1(key, report_body["hub"], cbor2.dumps(report_body, canonical=True))


def file_bytes(signed: bytes, receipt: Receipt | None = None) -> bytes:
    """The report file: the signed report and, once anchored, the anchor receipt (JSON text)."""
    doc = {"report": signed}
    if receipt is not None:
        doc["anchor"] = receipt.dumps()
    return cbor2.dumps(doc, canonical=True)


@dataclass
class ReportFile:
    signed: bytes
    envelope: cose.Envelope
    body: dict
    receipt: Receipt | None

    @property
    def anchor_root(self) -> bytes:
        return anchor_root(self.signed)


def anchor_root(signed: bytes) -> bytes:
    """What is anchored on the chain for a report: SHA-256 of its signed bytes (figures, commitment, signature)."""
    return hashlib.sha256(signed).digest()


def load_file(data: bytes, what: str = "report") -> ReportFile:
    """The report file decoded and its form checked, not its signature (``verify`` does that)."""
    try:
        doc = cose.strict_cbor(data, what)
    except cose.WireError as exc:
        raise ReportError("malformed_report", f"{exc.reason} (not a report file: give what govedge hub report "
                                              "wrote)") from None
    if not isinstance(doc, dict) or "report" not in doc or not isinstance(doc["report"], bytes) \
            or set(doc) - {"report", "anchor"}:
        raise ReportError("malformed_report", f"{what} is not a report file (a CBOR map of 'report' and "
                                              "'anchor', as govedge hub report writes it)")
    env = cose.decode_envelope(doc["report"], MAX_REPORT_BYTES, what)
    b = cose.strict_cbor(env.payload, f"{what} body", cose.OnlyTags(frozenset({wire.TAG_DECIMAL_FRACTION})))
    _check_form(b, env.kid, what)
    receipt = None
    if "anchor" in doc:
        try:
            receipt = Receipt.loads(doc["anchor"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ReportError("malformed_report", f"{what}: its anchor receipt is malformed: {exc}") from None
    return ReportFile(doc["report"], env, b, receipt)


def _check_form(b, kid: str, what: str) -> None:
    def need(ok: bool, why: str) -> None:
        if not ok:
            raise ReportError("malformed_report", f"{what}: {why}")

    need(isinstance(b, dict), "its body is not a map")
    need(b.get("v") == FORMAT_VERSION, f"format version {cose.show(b.get('v'))}, this program reads {FORMAT_VERSION}")
    need(b.get("method") == METHOD, f"method {cose.show(b.get('method'))}, this program knows {METHOD}")
    need(isinstance(b.get("station"), str) and bool(cose.DEVICE_ID.match(b["station"])), "its station is no device id")
    p = b.get("period")
    need(isinstance(p, list) and len(p) == 2 and all(type(t) is int and t % DAY_S == 0 for t in p)
         and 0 <= p[0] < p[1] <= LAST_SECOND + 1, "its period is not two UTC midnights from 1970 to 9999, the "
                                                  "first before the second")
    need(type(b.get("interval_s")) is int, "its interval_s is not an integer")
    need(b.get("hub") == kid, "the hub key id in its body differs from the signature's kid")
    r = b.get("readings")
    need(isinstance(r, dict) and type(r.get("count")) is int and isinstance(r.get("root"), bytes)
         and len(r["root"]) == 32 and isinstance(r.get("seqs"), list)
         and all(isinstance(x, list) and len(x) == 2 and all(type(s) is int for s in x) for x in r["seqs"]),
         "its readings are not a count, a 32-byte root and runs of sequence numbers")
    need(isinstance(b.get("quantities"), dict), "its quantities are not a map")
    need(type(b.get("made")) is int and 0 <= b["made"] <= LAST_SECOND, "its time of making is not a time from 1970 "
                                                                       "to 9999")


# --- checking a report ---


@dataclass
class Check:
    """What ``verify`` found: lines that hold ("ok"/"--" lines, as govedge verify shows them), and faults."""

    lines: list[str] = field(default_factory=list)
    faults: list[tuple[str, str]] = field(default_factory=list)  # (part, what does not hold)
    unchecked: tuple[str, str] | None = None  # (part, why) when the chain could not be asked

    def ok(self, text: str) -> None:
        self.lines.append(f"ok  {text}")

    def skipped(self, text: str) -> None:
        self.lines.append(f"--  {text}")

    def fault(self, part: str, text: str) -> None:
        self.faults.append((part, text))


MAX_NAMED = 20  # readings named one by one before the rest are counted


def day_text(t: int) -> str:
    return _date(t).isoformat()


def hour_text(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:00Z")


def _shown(x) -> str:
    if x is None:
        return "none"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, Decimal):
        return format(x, "f")
    return str(x)


def flatten(quantities: dict, limits: dict | None = None) -> dict[str, str]:
    """Every figure of a report's "quantities" as (a name a reader understands) -> its value as text."""
    out: dict[str, str] = {}
    for name, q in quantities.items():
        if not isinstance(q, dict):
            out[f"quantity {name}"] = "malformed"
            continue
        out[f"unit of {name}"] = _shown(q.get("unit"))
        out[f"resolution of {name}"] = _shown(q.get("resolution"))
        for entry in q.get("hours") or []:
            if not (isinstance(entry, list) and len(entry) == 5 and type(entry[0]) is int):
                out[f"hourly entry {name}"] = f"malformed: {cose.show(entry)}"
                continue
            hour, mean, covered, n, valid = entry
            at = hour_text(hour)
            out[f"hourly mean {name} {at}"] = _shown(mean)
            out[f"hourly data capture {name} {at}"] = f"{_shown(covered)} slots, {_shown(n)} readings, " \
                                                      f"valid {_shown(valid)}"
        for entry in q.get("days") or []:
            if not (isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int):
                out[f"daily entry {name}"] = f"malformed: {cose.show(entry)}"
                continue
            day, mean, hours = entry
            out[f"daily mean {name} {day_text(day)}"] = _shown(mean)
            out[f"daily data capture {name} {day_text(day)}"] = f"{_shown(hours)} valid hours"
        for key in ("annual_mean", "period_mean"):
            if key in q:
                m = q[key] if isinstance(q[key], dict) else {}
                word = key.replace("_", " ")
                out[f"{word} {name}"] = _shown(m.get("mean"))
                out[f"{word} data capture {name}"] = f"{_shown(m.get('valid_hours'))} of {_shown(m.get('hours'))} " \
                                                     f"hours valid, valid {_shown(m.get('valid'))}"
        for a in q.get("assessment") or []:
            a = a if isinstance(a, dict) else {}
            limit = (limits or {}).get(a.get("limit"))
            what = f"{a.get('limit')}" if limit is None else \
                f"{limit.id} ({_shown(limit.value)} ug/m3 {'daily' if limit.averaging == 'day' else 'annual'})"
            if "days_over" in a:
                out[f"days over {what}"] = _shown(a.get("days_over"))
            out[f"limit value exceeded {what}"] = _shown(a.get("exceeded"))
    return out


def runs_of(seqs: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in seqs:
        if runs and runs[-1][1] == s - 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs


def _expand(runs: list[list[int]], limit: int) -> Iterator[int]:
    """The sequence numbers of runs, at most ``limit`` of them (a forged report may claim 2^63)."""
    n = 0
    for first, last in runs:
        s = first
        while s <= last:
            if n >= limit:
                return
            yield s
            s, n = s + 1, n + 1


def verify(report: ReportFile, messages: Iterable[bytes], device_keys, key_rule: Callable | None = None,
           hub_keys: list | None = None, chain=None, account: str | None = None) -> Check:
    """Recomputes the report from signed readings (the station's among ``messages``, in any order) and checks
    the hub's signature (with ``hub_keys``), every device signature (``device_keys``: a registry), the
    commitment and every figure, and the anchor (its receipt; on ``chain`` when given). ``key_rule(device,
    key)``: the registry's rule of a device's key (revoked keys). Returns what held and what did not."""
    check = Check()
    b = report.body
    station, period = b["station"], Period(*b["period"])
    check.ok(f"report           {station}, {period.describe()}, {b['readings']['count']} readings, hub key "
             f"{b['hub']}, made {datetime.datetime.fromtimestamp(b['made'], datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
    # the hub's signature
    if hub_keys:
        signer = next((k for k in hub_keys if cose.signature_valid(report.envelope, k)), None)
        if signer is not None and hub_key_id(signer) != b["hub"]:
            check.fault("hub_signature", f"the report names hub key {b['hub']}, but the key that signed it is "
                                         f"{hub_key_id(signer)}")
        elif signer is not None:
            check.ok(f"hub_signature    ES256 by hub key {b['hub']}: valid")
        else:
            check.fault("hub_signature", f"the report's signature does not verify with the hub key given "
                                         f"(the report names hub key {b['hub']})")
    else:
        check.skipped(f"hub_signature    hub key {b['hub']}: not checked (give the hub's public key, --hub-key)")
    # the readings: the station's, in the period, signed by the device
    interval = b["interval_s"]
    try:
        figures = Figures(period, interval)
    except ReportError as exc:
        check.fault("figures", exc.reason)
        return check
    # sequence number -> (leaf hash of its signed bytes, whether it counts): a year of readings is kept as hashes
    by_seq: dict[int, tuple[bytes, bool]] = {}
    bad, seen, left_out = 0, 0, 0
    for message in messages:
        try:
            reading = wire.decode_unverified(message)
        except wire.WireError as exc:
            check.fault("readings", f"an item of the readings is no signed reading: {exc.code}: {exc.reason}")
            continue
        if reading.device_id != station or reading.time is None or not period.start <= reading.time < period.end:
            continue
        leaf = merkle.leaf_hash(reading.message)
        held = by_seq.get(reading.seq)
        if held is not None:
            if held[0] != leaf:
                check.fault("readings", f"reading {station} #{reading.seq} is there twice with other contents")
            continue
        seen += 1
        try:
            key = cose.check_signature(station, reading, device_keys, wire.DEVICE_SIGNER)
        except wire.WireError as exc:
            bad += 1
            check.fault("readings", f"reading {station} #{reading.seq}: {exc.code}: {exc.reason}")
            continue
        if key_rule is not None and key_rule(station, key).refusal(reading.seq, reading.time) is not None:
            left_out += 1  # signed by a key revoked (or retired) before the reading's time: it does not count
            by_seq[reading.seq] = (leaf, False)
            continue
        used = False
        for m in reading.measurements:
            value = countable(m.name, m.unit, m.value)
            if value is not None:
                figures.add(m.name, reading.time, value)
                used = True
        by_seq[reading.seq] = (leaf, used)
    commitment = Commitment()
    for seq in sorted(by_seq):
        leaf, used = by_seq[seq]
        if used:
            commitment.add_leaf(seq, leaf)
    if not bad:
        check.ok(f"readings         {seen} of the station's signed readings in the period, every device "
                 f"signature valid" + (f"; {left_out} signed by a revoked or retired key, left out" if left_out
                                       else ""))
    # the commitment: the same readings, the same count, the same root
    mine = commitment.body()
    claimed = b["readings"]
    claimed_seqs = set(_expand(claimed["seqs"], commitment.count + MAX_NAMED + 1))
    used_seqs = set(_expand(mine["seqs"], commitment.count))
    missing = sorted(claimed_seqs - used_seqs)
    extra = sorted(used_seqs - claimed_seqs)
    for seq in missing[:MAX_NAMED]:
        why = "it is not among the validly signed readings given" if seq not in by_seq else \
            "it does not count by the method (its key, its values)"
        check.fault("commitment", f"reading {station} #{seq} is used by the report, but {why}")
    for seq in extra[:MAX_NAMED]:
        check.fault("commitment", f"reading {station} #{seq} counts by the method, but the report leaves it out")
    if len(missing) + len(extra) > 2 * MAX_NAMED:
        check.fault("commitment", f"and more: {len(missing)} readings used by the report are missing, {len(extra)} "
                                  "counting readings are left out")
    if claimed["count"] != mine["count"]:
        check.fault("commitment", f"count of readings: report says {claimed['count']}, the readings give "
                                  f"{mine['count']}")
    if claimed["root"] != mine["root"]:
        check.fault("commitment", f"Merkle root: report says {claimed['root'].hex()[:16]}..., the readings give "
                                  f"{mine['root'].hex()[:16]}...")
    if claimed["seqs"] != mine["seqs"] and not (missing or extra):
        check.fault("commitment", "the report's runs of sequence numbers are not written as this method writes them")
    if not any(part == "commitment" for part, _ in check.faults):
        check.ok(f"commitment       {mine['count']} readings, Merkle root {mine['root'].hex()[:16]}...: the "
                 "readings give the same")
    # the figures, one by one
    limits = {limit.id: limit for limit in LIMITS}
    if b.get("limits") != [limit.to_body() for limit in LIMITS]:
        check.fault("figures", f"the limit values the report names differ from those of method {METHOD}")
    for key, expected in (("year", period.year), ("measurements", "indicative"), ("note", INDICATIVE)):
        if b.get(key) != expected:
            check.fault("figures", f"{key}: report says {cose.show(b.get(key))}, the method gives "
                                   f"{cose.show(expected)}")
    theirs, ours = flatten(b["quantities"], limits), flatten(figures.body(), limits)
    wrong = 0
    for name in list(ours) + [n for n in theirs if n not in ours]:
        if theirs.get(name) != ours.get(name):
            wrong += 1
            check.fault("figures", f"{name}: report says {theirs.get(name, 'none')}, the readings give "
                                   f"{ours.get(name, 'none')}")
    if not wrong and not any(part == "figures" for part, _ in check.faults):
        check.ok(f"figures          {len(ours)} figures recomputed from the readings: all hold")
    _check_anchor(report, check, chain, account)
    return check


def _check_anchor(report: ReportFile, check: Check, chain, account: str | None) -> None:
    from .receipt import AnchorError

    receipt = report.receipt
    root = report.anchor_root
    if receipt is None:
        check.skipped("anchor_receipt   the report carries no anchor receipt (not anchored, or not confirmed yet: "
                      "govedge hub anchor-report)")
        return
    if receipt.root != root:
        check.fault("anchor_receipt", f"the receipt is for root {receipt.root.hex()[:16]}..., the report's is "
                                      f"{root.hex()[:16]}... (SHA-256 of its signed bytes)")
        return
    if not receipt.confirmed:
        check.fault("anchor_receipt", f"the receipt ({receipt.reference}) is not confirmed in a block")
        return
    line = f"anchor_receipt   {receipt.backend} {receipt.chain}, block {receipt.block}, {receipt.reference}"
    if chain is None:
        check.skipped(f"{line}: not checked on the chain")
        return
    check.ok(line)
    identity = account or receipt.details.get("gateway") or receipt.details.get("creator")
    try:
        asked = chain.chain
        if asked != receipt.chain:
            check.fault("chain", f"the receipt is of chain {receipt.chain}, the node asked serves {asked}")
            return
        seen = chain.lookup(root, anchored_by=identity)
    except AnchorError as exc:
        if exc.code == "mismatch":
            check.fault("chain", f"{exc.code}: {exc.reason}")
        else:
            check.unchecked = ("chain", f"{exc.code}: {exc.reason}")
        return
    if seen is None:
        check.fault("chain", f"the chain does not hold root {root.hex()[:16]}..."
                             + (f" anchored by {identity}" if identity else ""))
        return
    if seen.block != receipt.block or seen.reference.lower() != receipt.reference.lower():
        check.fault("chain", f"the chain holds the root in block {seen.block} ({seen.reference}), the receipt "
                             f"says block {receipt.block} ({receipt.reference})")
        return
    sender = seen.details.get("gateway") or seen.details.get("creator")
    if account is not None and (sender or "").lower() != account.lower():
        check.fault("chain", f"the root was anchored by account {sender}, not the hub's {account}")
        return
    checked = account is not None or seen.details.get("signature_checked") is True
    text = f"chain            {seen.chain} holds the root in block {seen.block}, anchored by {sender}"
    if checked:
        check.ok(f"{text}: valid")
    else:
        check.skipped(f"{text}: hub identity not checked")
