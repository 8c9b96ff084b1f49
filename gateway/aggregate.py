"""The aggregate stage: condense each quantity of each device into windows of its own time.

filter -> **aggregate** -> batch. Windows are tumbling, ``window_s`` long and
aligned to multiples of ``window_s`` since 1970 (so 60 s windows start on the
minute, the same for every device), on the device's clock, never the gateway's.

Each device has a watermark: the newest reading time it has sent. A window
``[start, end)`` closes when the watermark reaches ``end + lateness_s``; until
then readings may arrive for it in any order. Once it has closed, a reading for
it raises :class:`LateReading`: it is neither merged into a window already
handed on nor dropped without a word, and the caller keeps it (and counts it).

Per window: count, min, max, mean, population standard deviation (the window's
readings are all there is to describe, and a single reading gives 0, not an
undefined value), computed with Welford's update; last is the value of the
reading with the latest time, ties going to the higher sequence number; first_seq
and last_seq are the lowest and highest sequence numbers in the window.

Windows are kept per (device, name, unit): a unit that changes never mixes values.
A reading without time (node clock not set) cannot be put in a window and
raises :class:`TimeUnknown`, so the caller handles it explicitly.

Memory: open windows are bounded by the quantities a device sends within
``window_s + lateness_s`` of its watermark; each window is a fixed set of numbers.
Per device the aggregator keeps its watermark and where its closed windows end
(two numbers), so it can tell a late reading from a new one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from govedge.core.config import ConfigError
from govedge.core.errors import GovedgeError

Number = Union[int, float, Decimal]


class AggregateConfigError(ConfigError):
    def __init__(self, key: str, value, reason: str):
        super().__init__(reason, message=f"aggregate config {key} = {value!r}: {reason}")
        self.key = key
        self.value = value


class NotAggregated(GovedgeError, ValueError):
    """A measurement the aggregator did not take; ``code`` for counters, the text says why."""

    code = "not_aggregated"

    def __init__(self, device_id: str, seq: int, name: str, reason: str):
        super().__init__(reason)
        self.device_id = device_id
        self.seq = seq
        self.name = name


class TimeUnknown(NotAggregated):
    code = "time_unknown"


class NotANumber(NotAggregated):
    code = "not_a_number"


class LateReading(NotAggregated):
    """A reading for a window that has already closed (and gone on in a batch)."""

    code = "late"

    def __init__(self, device_id, seq, name, reason, time, window_start, window_end, watermark):
        super().__init__(device_id, seq, name, reason)
        self.time = time
        self.window_start = window_start
        self.window_end = window_end
        self.watermark = watermark


@dataclass(frozen=True)
class Aggregate:
    device_id: str
    name: str
    unit: str | None
    window_start: int
    window_end: int
    count: int
    min: Number
    max: Number
    mean: float
    stdev: float  # population standard deviation
    last: Number
    first_seq: int
    last_seq: int

    def to_cbor_map(self) -> dict:
        """Plain ints, floats and text for the batch; no unit key when there is no unit.

        min, max and last keep ints as ints; Decimals become the nearest float, whose
        shortest repr gives back the decimal digits for up to 15 significant digits
        (the exact values stay in the device messages the batch carries).
        """
        out = {"device_id": self.device_id, "name": self.name}
        if self.unit is not None:
            out["unit"] = self.unit
        out.update({
            "window_start": self.window_start,
            "window_end": self.window_end,
            "count": self.count,
            "min": _plain(self.min),
            "max": _plain(self.max),
            "mean": float(self.mean),
            "stdev": float(self.stdev),
            "last": _plain(self.last),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        })
        return out


def _plain(x: Number) -> int | float:
    return x if type(x) is int else float(x)


class _Window:
    """One open window: fixed-size running statistics (Welford), on values scaled by a power of
    two, the binary exponent of the largest value so far, so that squared deviations of very
    small values do not underflow to 0 and those of very large ones do not overflow."""

    __slots__ = ("start", "name", "unit", "count", "exp", "mean", "m2", "min", "max",
                 "last", "last_time", "last_seq_of_last", "first_seq", "last_seq")

    def __init__(self, start: int, name: str, unit: str | None):
        self.start = start
        self.name = name
        self.unit = unit
        self.count = 0
        self.exp = None  # the values are scaled by 2**-exp; None while every value was 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = self.max = self.last = None
        self.last_time = self.last_seq_of_last = None
        self.first_seq = self.last_seq = None

    def add(self, time, seq: int, value: Number, x: float) -> None:
        # Welford (1962): running mean and sum of squared deviations, one pass
        if x:
            e = math.frexp(x)[1]
            if self.exp is None:
                self.exp = e  # every value so far was 0: scaled or not, the sums are 0
            elif e > self.exp:  # a larger value: the sums so far to its scale
                self.mean = math.ldexp(self.mean, self.exp - e)
                self.m2 = math.ldexp(self.m2, 2 * (self.exp - e))
                self.exp = e
            x = math.ldexp(x, -self.exp)
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value
        if self.last_time is None or (time, seq) > (self.last_time, self.last_seq_of_last):
            self.last, self.last_time, self.last_seq_of_last = value, time, seq
        if self.first_seq is None or seq < self.first_seq:
            self.first_seq = seq
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq

    def aggregate(self, device_id: str, window_s: int) -> Aggregate:
        return Aggregate(
            device_id, self.name, self.unit, self.start, self.start + window_s, self.count,
            self.min, self.max, math.ldexp(self.mean, self.exp or 0),
            math.ldexp(math.sqrt(max(self.m2, 0.0) / self.count), self.exp or 0),
            self.last, self.first_seq, self.last_seq,
        )


class _Device:
    __slots__ = ("watermark", "closed_until", "windows")

    def __init__(self):
        self.watermark = None  # newest reading time of the device
        self.closed_until = None  # every window ending at or before this has closed
        self.windows: dict[tuple, _Window] = {}


class Aggregator:
    """Tumbling windows of ``window_s`` seconds of device time, closing ``lateness_s`` after their end."""

    def __init__(self, window_s: int = 60, lateness_s: int = 0):
        if type(window_s) is not int or window_s < 1:
            raise AggregateConfigError("window_s", window_s, "must be a whole number of seconds, 1 or more")
        if type(lateness_s) is not int or lateness_s < 0:
            raise AggregateConfigError("lateness_s", lateness_s, "must be a whole number of seconds, 0 or more")
        self.window_s = window_s
        self.lateness_s = lateness_s
        self._devices: dict[str, _Device] = {}

    @classmethod
    def from_config(cls, config: Mapping | None) -> Aggregator:
        """From the gateway config's aggregate table: window_s, lateness_s (both optional)."""
        config = {} if config is None else config
        if not isinstance(config, Mapping):
            raise AggregateConfigError("aggregate", config, "must be a table of window_s and lateness_s")
        for key in config:
            if key not in ("window_s", "lateness_s"):
                raise AggregateConfigError(key, config[key], "not a setting here (known: window_s, lateness_s)")
        return cls(**config)

    @property
    def open_windows(self) -> int:
        return sum(len(d.windows) for d in self._devices.values())

    def watermark(self, device_id: str):
        """The newest reading time seen from the device, or None."""
        device = self._devices.get(device_id)
        return None if device is None else device.watermark

    def add(self, device_id: str, time, seq: int, name: str, unit: str | None, value: Number) -> list[Aggregate]:
        """Put one measurement in its window; returns the windows this closed (oldest first).

        Raises TimeUnknown (time is None), NotANumber, or LateReading (its window has closed).
        """
        if time is None:
            raise TimeUnknown(device_id, seq, name,
                              f"{device_id} #{seq} {name}: the node's clock was not set, so no window can hold it")
        if type(time) not in (int, float) or not math.isfinite(time):
            raise NotAggregated(device_id, seq, name, f"{device_id} #{seq} {name}: time {time!r} is not a finite number")
        x = _as_float(device_id, seq, name, value)
        w = self.window_s
        start = int(time // w) * w
        end = start + w
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
        if device.closed_until is not None and end <= device.closed_until:
            raise LateReading(
                device_id, seq, name,
                f"{device_id} #{seq} {name} at device time {time} is late: its window {start}..{end} "
                f"closed (watermark {device.watermark}, lateness {self.lateness_s} s)",
                time, start, end, device.watermark)
        key = (start, name, unit)
        window = device.windows.get(key)
        if window is None:
            window = device.windows[key] = _Window(start, name, unit)
        window.add(time, seq, value, x)
        if device.watermark is None or time > device.watermark:
            device.watermark = time
            return self._close(device_id, device, int((time - self.lateness_s) // w) * w)
        return []

    def flush(self, now=None) -> list[Aggregate]:
        """Close windows before their watermark does: all of them (now=None, at shutdown),
        or those whose end + lateness_s <= now, now being seconds since 1970 on the
        devices' clocks (for devices that went quiet). Readings for them are late after this.
        """
        closed = []
        for device_id in sorted(self._devices):
            device = self._devices[device_id]
            if now is None:
                if device.windows:
                    bound = max(key[0] for key in device.windows) + self.window_s
                    closed += self._close(device_id, device, bound)
            else:
                closed += self._close(device_id, device, int((now - self.lateness_s) // self.window_s) * self.window_s)
        return closed

    def _close(self, device_id: str, device: _Device, bound: int) -> list[Aggregate]:
        if device.closed_until is not None and bound <= device.closed_until:
            return []
        device.closed_until = bound
        last_start = bound - self.window_s
        due = sorted((key for key in device.windows if key[0] <= last_start),
                     key=lambda k: (k[0], k[1], k[2] or ""))
        return [device.windows.pop(key).aggregate(device_id, self.window_s) for key in due]


def _as_float(device_id: str, seq: int, name: str, value) -> float:
    if type(value) not in (int, float, Decimal):
        raise NotANumber(device_id, seq, name,
                         f"{device_id} #{seq} {name}: value {value!r} is not a number; only numbers are aggregated")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise NotANumber(device_id, seq, name,
                         f"{device_id} #{seq} {name}: value {value} is not a finite number a float can hold")
    return x
