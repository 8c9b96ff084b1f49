"""The filter stage: hold back what is implausible, spiky, redundant or too much.

verify -> **filter** -> aggregate. For each verified reading, :meth:`Filter.process`
says which measurements pass on and, for every one held back, the rule that held
it and a reason a technician can read. The caller counts the held ones per rule
and keeps them for audit; this module does no I/O and never drops anything
silently.

Rules, in the order they are applied:

``rate``
    Per device, a token bucket on the device's own clock: it holds ``readings``
    tokens, refills at ``readings`` per ``per_s`` seconds of device time, and every
    timed reading takes one. A device may burst ``readings`` at once, then one per
    ``per_s / readings`` seconds. Over the limit, every measurement of the reading
    is held. Device time (not arrival time) is used so a node that empties its
    offline buffer after an outage is not punished for the backlog.
``range``
    Per quantity, the plausible range (by default the sensor's datasheet limits),
    the expected unit, and that the value is a number.
``spike``
    Hampel identifier over the last ``spike_window`` values of the (device,
    quantity), in arrival order, the current value included: held when it lies
    more than max(``spike_threshold`` * 1.4826 * MAD, ``spike_floor``) from the
    window's median.
``deadband``
    Held when it differs from the last forwarded value of the (device, quantity)
    by no more than ``deadband``, unless ``heartbeat_s`` seconds of device time
    have passed since that value was forwarded.

Readings without a time (node clock not set) pass ``rate`` and ``deadband``
untouched and leave their state alone: both rules run on device time. They are
still checked by ``range`` and ``spike`` (which run on values and arrival order).

Measurement names that are not in the quantities table (status records, sensors
nobody configured) pass untouched: the filter has no rule for them.

Values that pass are the caller's own :class:`~govedge.core.wire.Measurement`
objects, so Decimals stay Decimals, exactly as signed.
"""

from __future__ import annotations

import decimal
import math
import time as _time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from govedge.core.wire import Measurement, Reading
from govedge.core.config import ConfigError

RATE = "rate"
RANGE = "range"
SPIKE = "spike"
DEADBAND = "deadband"
RULES = (RATE, RANGE, SPIKE, DEADBAND)

# MAD * 1.4826 estimates the standard deviation of normally distributed values
MAD_TO_SIGMA = 1.4826

# Built-in per-quantity rules for the names of docs/FORMAT.md.
# Ranges: the sensors' operating ranges. Bosch BME280 datasheet (BST-BME280-DS002),
# section 1 "Specification": -40..85 °C, 0..100 %RH, 300..1100 hPa.
# Nova Fitness SDS011 Laser PM2.5 Sensor specification V1.3: 0.0..999.9 µg/m³.
# Spike floors: the same datasheets' absolute accuracy (BME280 ±1 °C, ±3 %RH,
# ±1 hPa; SDS011 ±10 µg/m³): a deviation the sensor itself may make is never a spike.
QUANTITIES: dict[str, dict[str, Any]] = {
    "temp": {"unit": "Cel", "min": -40, "max": 85, "spike_floor": 1},
    "hum": {"unit": "%RH", "min": 0, "max": 100, "spike_floor": 3},
    "press": {"unit": "Pa", "min": 30000, "max": 110000, "spike_floor": 100},
    "pm2_5": {"unit": "ug/m3", "min": 0, "max": Decimal("999.9"), "spike_floor": 10},
    "pm10": {"unit": "ug/m3", "min": 0, "max": Decimal("999.9"), "spike_floor": 10},
}

# what every quantity gets unless its table entry or the config says otherwise
QUANTITY_DEFAULTS: dict[str, Any] = {
    "unit": None,  # None: any unit
    "min": None,
    "max": None,
    "spike_window": 7,  # None: no spike rule
    "spike_threshold": 3,
    "spike_floor": 0,
    # off by default: the aggregate stage after this one counts and averages what
    # passes, and a deadband would turn its count and mean into ones of changes
    "deadband": None,
    "heartbeat_s": 900,
}

# settings that None (or false, in TOML) switches off
OPTIONAL_SETTINGS = ("unit", "min", "max", "spike_window", "deadband")

DEFAULT_RATE = {"readings": 20, "per_s": 60}
DEFAULT_FORGET_AFTER_S = 3600

CONFIG_KEYS = ("quantities", "rate", "forget_after_s", "devices")
DEVICE_KEYS = ("quantities", "rate")

# exact arithmetic for deadband comparisons of ints and Decimals: wide enough for
# any value the wire carries (64-bit mantissas), and never raising
_EXACT = decimal.Context(prec=200, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])


class FilterConfigError(ConfigError):
    """A filter config that cannot be used; ``key`` is the dotted path of the setting."""

    def __init__(self, key: str, value: Any, reason: str):
        super().__init__(reason, message=f"filter config {key} = {value!r}: {reason}")
        self.key = key
        self.value = value


@dataclass(frozen=True)
class Held:
    """A measurement held back: the rule that held it and why, in a technician's words."""

    measurement: Measurement
    rule: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """What the filter made of one reading: the measurements that pass and those held back."""

    reading: Reading
    passed: tuple[Measurement, ...]
    held: tuple[Held, ...]


@dataclass(frozen=True)
class QuantityRules:
    """The rules for one quantity of one device, after defaults and overrides."""

    unit: str | None
    min: int | float | Decimal | None
    max: int | float | Decimal | None
    spike_window: int | None
    spike_threshold: float
    spike_floor: float
    deadband: int | float | Decimal | None
    heartbeat_s: int | float
    deadband_exact: Decimal | None = None

    def range_text(self) -> str:
        lo = "" if self.min is None else _show(self.min)
        hi = "" if self.max is None else _show(self.max)
        return f"{lo}..{hi}"


@dataclass(frozen=True)
class RateLimit:
    readings: int
    per_s: int | float


class _Track:
    """State of one (device, quantity): its spike window and its last forwarded value."""

    __slots__ = ("window", "sent_value", "sent_time")

    def __init__(self, rules: QuantityRules):
        self.window = deque(maxlen=rules.spike_window) if rules.spike_window else None
        self.sent_value = None
        self.sent_time = None


class _Device:
    __slots__ = ("tracks", "tokens", "bucket_time", "seen")

    def __init__(self):
        self.tracks: dict[str, _Track] = {}
        self.tokens = None  # in token-seconds: a reading costs per_s, capacity readings * per_s
        self.bucket_time = None
        self.seen = 0.0


class Filter:
    """The filter stage. ``config`` is a mapping (all keys optional)::

        {"quantities": {"temp": {"min": -20, "deadband": 0.1}},   # over QUANTITIES
         "rate": {"readings": 20, "per_s": 60},                    # per device; None or false: no limit
         "forget_after_s": 3600,                                   # on the gateway's clock
         "devices": {"esp32-0007": {"quantities": {...}, "rate": {...}}}}

    ``clock`` is the gateway's monotonic clock, used only to forget devices that
    sent nothing for ``forget_after_s`` seconds (their windows say little about now).
    """

    def __init__(self, config: Mapping | None = None, clock: Callable[[], float] = _time.monotonic):
        config = {} if config is None else config
        _mapping(config, "(whole table)")
        _known_keys(config, CONFIG_KEYS, "")
        base = _merge_quantities(QUANTITIES, config.get("quantities"), "quantities")
        self._rules = _resolve_quantities(base, "quantities")
        self._rate = _rate(_merged_rate(DEFAULT_RATE, config, "rate"), "rate")
        self._forget_after_s = _number(config.get("forget_after_s", DEFAULT_FORGET_AFTER_S),
                                       "forget_after_s", positive=True)
        self._device_rules: dict[str, dict[str, QuantityRules]] = {}
        self._device_rate: dict[str, RateLimit | None] = {}
        devices = config.get("devices", {})
        _mapping(devices, "devices")
        for device_id, override in devices.items():
            where = f"devices.{device_id}"
            _mapping(override, where)
            _known_keys(override, DEVICE_KEYS, where + ".")
            if "quantities" in override:
                merged = _merge_quantities(base, override["quantities"], where + ".quantities")
                self._device_rules[device_id] = _resolve_quantities(merged, where + ".quantities")
            if "rate" in override:
                rate_base = {} if self._rate is None else vars(self._rate)
                self._device_rate[device_id] = _rate(_merged_rate(rate_base, override, where + ".rate"),
                                                     where + ".rate")
        self._clock = clock
        self._devices: OrderedDict[str, _Device] = OrderedDict()  # least recently seen first

    @property
    def tracked_devices(self) -> int:
        """How many devices the filter holds state for (idle ones are forgotten)."""
        return len(self._devices)

    def rules(self, device_id: str, name: str) -> QuantityRules | None:
        """The rules a quantity of a device is filtered by; None when it is not filtered."""
        return self._device_rules.get(device_id, self._rules).get(name)

    def process(self, reading: Reading) -> Decision:
        device = self._device(reading.device_id)
        t = reading.time
        rate = self._device_rate.get(reading.device_id, self._rate)
        if t is not None and rate is not None and not self._take_token(device, rate, t):
            reason = (f"device {reading.device_id} over its rate limit of {rate.readings} readings "
                      f"per {_show(rate.per_s)} s of device time")
            return Decision(reading, (), tuple(Held(m, RATE, reason) for m in reading.measurements))
        rules_of = self._device_rules.get(reading.device_id, self._rules)
        passed = []
        held = []
        for m in reading.measurements:
            rules = rules_of.get(m.name)
            if rules is None:
                passed.append(m)
                continue
            track = device.tracks.get(m.name)
            if track is None:
                track = device.tracks[m.name] = _Track(rules)
            verdict = _judge(m, rules, track, t)
            if verdict is None:
                passed.append(m)
            else:
                held.append(Held(m, *verdict))
        return Decision(reading, tuple(passed), tuple(held))

    def _device(self, device_id: str) -> _Device:
        now = self._clock()
        devices = self._devices
        limit = now - self._forget_after_s
        while devices:
            oldest = next(iter(devices.values()))
            if oldest.seen > limit:
                break
            devices.popitem(last=False)
        device = devices.get(device_id)
        if device is None:
            device = devices[device_id] = _Device()
        else:
            devices.move_to_end(device_id)
        device.seen = now
        return device

    @staticmethod
    def _take_token(device: _Device, rate: RateLimit, t) -> bool:
        # token-seconds keep the arithmetic exact for whole-second times
        capacity = rate.readings * rate.per_s
        if device.tokens is None:
            device.tokens = capacity
        elif t > device.bucket_time:
            device.tokens = min(capacity, device.tokens + (t - device.bucket_time) * rate.readings)
        # a clock that steps back refills nothing, and the bucket follows it from there
        device.bucket_time = t
        if device.tokens >= rate.per_s:
            device.tokens -= rate.per_s
            return True
        return False


def _judge(m: Measurement, rules: QuantityRules, track: _Track, t) -> tuple[str, str] | None:
    """None if the measurement passes, else (rule, reason). Updates the track."""
    value = m.value
    if rules.unit is not None and m.unit != rules.unit:
        return RANGE, f"{m.name} given in {m.unit or 'no unit'}, expected {rules.unit}"
    if type(value) not in (int, float, Decimal):
        return RANGE, f"{m.name} value {_show(value)} is not a number"
    if (rules.min is not None and value < rules.min) or (rules.max is not None and value > rules.max):
        return RANGE, f"{_what(m)} outside plausible range {rules.range_text()}"
    try:
        f = float(value)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        return RANGE, f"{_what(m)} is not a finite number the gateway can compute with"

    window = track.window
    if window is not None:
        window.append(f)
        # until the window is full there is no median to trust: values pass unjudged
        if len(window) == window.maxlen:
            ordered = sorted(window)
            median = _median(ordered)
            mad = _median(sorted(abs(x - median) for x in ordered))
            limit = max(rules.spike_threshold * MAD_TO_SIGMA * mad, rules.spike_floor)
            distance = abs(f - median)
            if distance > limit:
                return SPIKE, (f"{_what(m)} is a spike: {_g(distance)} from the median {_g(median)} of the "
                               f"last {len(window)} values, above the limit {_g(limit)} = max("
                               f"{_g(rules.spike_threshold)} x 1.4826 x MAD {_g(mad)}, "
                               f"floor {_g(rules.spike_floor)})")

    if rules.deadband is not None and t is not None:
        last = track.sent_value
        if last is not None:
            due = track.sent_time + rules.heartbeat_s
            if t < due and not _differs(value, last, rules):
                return DEADBAND, (f"{_what(m)} within deadband {_show(rules.deadband)} of the last forwarded "
                                  f"{_show(last)}; heartbeat due at device time {_show(due)}")
        track.sent_value = value
        if track.sent_time is None or t > track.sent_time:
            track.sent_time = t
    return None


def _what(m: Measurement) -> str:
    return f"{m.name} {_show(m.value)} {m.unit or ''}".rstrip()


def _differs(value, last, rules: QuantityRules) -> bool:
    """|value - last| > deadband, exactly unless one of the values is a float."""
    if type(value) is float or type(last) is float:
        return abs(float(value) - float(last)) > float(rules.deadband)
    difference = _EXACT.abs(_EXACT.subtract(Decimal(value), Decimal(last)))
    return _EXACT.compare(difference, rules.deadband_exact) > 0


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _show(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def _g(x: float) -> str:
    return format(x, ".4g")


# --- config ---------------------------------------------------------------


def _mapping(value, key: str) -> None:
    if not isinstance(value, Mapping):
        raise FilterConfigError(key, value, "must be a mapping")


def _known_keys(mapping: Mapping, known, prefix: str) -> None:
    for key in mapping:
        if key not in known:
            raise FilterConfigError(f"{prefix}{key}", mapping[key],
                                    f"not a setting here (known: {', '.join(known)})")


def _merge_quantities(base: Mapping, override, where: str) -> dict[str, dict]:
    merged = {name: dict(settings) for name, settings in base.items()}
    if override is None:
        return merged
    _mapping(override, where)
    for name, settings in override.items():
        _mapping(settings, f"{where}.{name}")
        _known_keys(settings, tuple(QUANTITY_DEFAULTS), f"{where}.{name}.")
        merged.setdefault(name, {}).update(settings)
    return merged


def _resolve_quantities(merged: Mapping, where: str) -> dict[str, QuantityRules]:
    return {name: _quantity({**QUANTITY_DEFAULTS, **settings}, f"{where}.{name}")
            for name, settings in merged.items()}


def _off(value):
    # TOML has no null: false switches a setting off as None does
    return None if value is False else value


def _quantity(s: Mapping, where: str) -> QuantityRules:
    s = {key: (_off(value) if key in OPTIONAL_SETTINGS else value) for key, value in s.items()}
    unit = s["unit"]
    if unit is not None and (not isinstance(unit, str) or not unit):
        raise FilterConfigError(f"{where}.unit", unit, "must be a SenML unit such as 'Cel', or None")
    lo = _number(s["min"], f"{where}.min", optional=True, signed=True)
    hi = _number(s["max"], f"{where}.max", optional=True, signed=True)
    if lo is not None and hi is not None and lo > hi:
        raise FilterConfigError(f"{where}.min", lo, f"is above {where}.max = {hi!r}")
    window = s["spike_window"]
    if window is not None and (type(window) is not int or window < 3):
        raise FilterConfigError(f"{where}.spike_window", window, "must be a whole number of values, 3 or more, or None")
    threshold = _number(s["spike_threshold"], f"{where}.spike_threshold", positive=True)
    floor = _number(s["spike_floor"], f"{where}.spike_floor")
    deadband = _number(s["deadband"], f"{where}.deadband", optional=True)
    heartbeat = _number(s["heartbeat_s"], f"{where}.heartbeat_s", positive=True)
    exact = None
    if deadband is not None:
        # a float from a config file means the decimal it was written as
        exact = Decimal(repr(deadband)) if isinstance(deadband, float) else Decimal(deadband)
    return QuantityRules(unit, lo, hi, window, float(threshold), float(floor), deadband, heartbeat, exact)


def _merged_rate(base: Mapping, config: Mapping, where: str):
    if "rate" not in config:
        return dict(base) if base else None
    rate = _off(config["rate"])
    if rate is None:
        return None
    _mapping(rate, where)
    _known_keys(rate, ("readings", "per_s"), where + ".")
    return {**DEFAULT_RATE, **base, **rate}


def _rate(settings, where: str) -> RateLimit | None:
    if settings is None:
        return None
    readings = settings["readings"]
    if type(readings) is not int or readings < 1:
        raise FilterConfigError(f"{where}.readings", readings, "must be a whole number of readings, 1 or more")
    per_s = _number(settings["per_s"], f"{where}.per_s", positive=True)
    if isinstance(per_s, Decimal):
        per_s = float(per_s)
    return RateLimit(readings, per_s)


def _number(value, key: str, optional: bool = False, positive: bool = False, signed: bool = False):
    if value is None and optional:
        return None
    if type(value) not in (int, float, Decimal) or not math.isfinite(value):
        raise FilterConfigError(key, value, "must be a finite number" + (" or None" if optional else ""))
    if signed:
        return value
    if value < 0 or (positive and value == 0):
        raise FilterConfigError(key, value, "must be above 0" if positive else "must not be negative")
    return value
