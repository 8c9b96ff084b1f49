"""The gateway's aggregate stage: windows on device time, checked against Python's statistics module."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from decimal import Decimal as D
from fractions import Fraction

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from govedge.gateway.aggregate import (AggregateConfigError, Aggregator, LateReading, NotANumber,
                                       TimeUnknown)

T0 = 1_764_300_000  # a multiple of 60: windows of 60 s start here
DEV = "esp32-0007"


def feed(agg: Aggregator, readings, device=DEV, name="temp", unit="Cel"):
    """Add (time, seq, value) in order; the aggregates closed along the way."""
    closed = []
    for time, seq, value in readings:
        closed += agg.add(device, time, seq, name, unit, value)
    return closed


# --- windows and watermark ------------------------------------------------------


def test_window_closes_when_the_watermark_reaches_its_end_plus_lateness():
    agg = Aggregator(window_s=60, lateness_s=30)
    assert feed(agg, [(T0 + 10, 1, 20), (T0 + 50, 2, 22), (T0 + 65, 3, 30), (T0 + 89, 4, 31)]) == []
    (closed,) = feed(agg, [(T0 + 90, 5, 32)])
    assert (closed.window_start, closed.window_end, closed.count, closed.first_seq, closed.last_seq) == \
        (T0, T0 + 60, 2, 1, 2)
    assert agg.open_windows == 1


def test_with_no_lateness_the_first_reading_of_the_next_window_closes_the_previous():
    agg = Aggregator(window_s=60, lateness_s=0)
    assert feed(agg, [(T0, 1, 1), (T0 + 59, 2, 2)]) == []
    assert [a.window_start for a in feed(agg, [(T0 + 60, 3, 3)])] == [T0]


def test_out_of_order_readings_within_lateness_are_merged():
    agg = Aggregator(window_s=60, lateness_s=120)
    feed(agg, [(T0 + 30, 2, 5), (T0 + 100, 4, 9), (T0 + 10, 1, 3), (T0 + 170, 5, 1), (T0 + 40, 3, 4)])
    (first,) = feed(agg, [(T0 + 180, 6, 0)])
    assert (first.count, first.min, first.max, first.last, first.first_seq, first.last_seq) == (3, 3, 5, 4, 1, 3)


def test_a_reading_for_a_closed_window_is_reported_late_not_merged():
    agg = Aggregator(window_s=60, lateness_s=30)
    (closed,) = feed(agg, [(T0 + 10, 1, 20), (T0 + 95, 2, 21)])
    with pytest.raises(LateReading) as late:
        agg.add(DEV, T0 + 20, 3, "temp", "Cel", 99)
    e = late.value
    assert (e.code, e.device_id, e.seq, e.name, e.window_start, e.window_end, e.watermark) == \
        ("late", DEV, 3, "temp", T0, T0 + 60, T0 + 95)
    assert str(e) == (f"esp32-0007 #3 temp at device time {T0 + 20} is late: its window {T0}..{T0 + 60} "
                      f"closed (watermark {T0 + 95}, lateness 30 s)")
    # nothing of it in any window, before or after
    assert closed.count == 1 and closed.max == 20
    assert [(a.window_start, a.count, a.max) for a in agg.flush()] == [(T0 + 60, 1, 21)]


def test_late_is_decided_by_the_watermark_even_for_a_window_that_never_had_readings():
    agg = Aggregator(window_s=60, lateness_s=0)
    feed(agg, [(T0 + 200, 1, 1)])
    with pytest.raises(LateReading):
        agg.add(DEV, T0 + 5, 2, "temp", "Cel", 1)


def test_watermark_is_per_device():
    agg = Aggregator(window_s=60, lateness_s=0)
    feed(agg, [(T0 + 5, 1, 1)], device="a")
    feed(agg, [(T0 + 500, 1, 1)], device="b")
    assert feed(agg, [(T0 + 6, 2, 2)], device="a") == []
    assert (agg.watermark("a"), agg.watermark("b"), agg.watermark("c")) == (T0 + 6, T0 + 500, None)


def test_closed_windows_come_out_oldest_first():
    agg = Aggregator(window_s=60, lateness_s=300)
    for i, t in enumerate([T0 + 250, T0 + 10, T0 + 130, T0 + 70]):
        agg.add(DEV, t, i, "temp", "Cel", i)
        agg.add(DEV, t, i, "hum", "%RH", i)
    closed = agg.add(DEV, T0 + 600, 9, "temp", "Cel", 0)
    assert [(a.window_start - T0, a.name) for a in closed] == [
        (0, "hum"), (0, "temp"), (60, "hum"), (60, "temp"), (120, "hum"), (120, "temp"), (240, "hum"), (240, "temp")]


def test_float_times_fall_in_the_window_of_their_whole_seconds():
    agg = Aggregator(window_s=60)
    agg.add(DEV, T0 + 59.75, 1, "temp", "Cel", 1)
    (a,) = agg.flush()
    assert (a.window_start, a.window_end) == (T0, T0 + 60) and type(a.window_start) is int


# --- flush -------------------------------------------------------------------------


def test_flush_closes_every_open_window_and_later_readings_for_them_are_late():
    agg = Aggregator(window_s=60, lateness_s=600)
    feed(agg, [(T0 + 10, 1, 1), (T0 + 70, 2, 2)], device="a")
    feed(agg, [(T0 + 20, 1, 3)], device="b")
    assert [(a.device_id, a.window_start - T0) for a in agg.flush()] == [("a", 0), ("a", 60), ("b", 0)]
    assert agg.open_windows == 0 and agg.flush() == []
    with pytest.raises(LateReading):
        agg.add("a", T0 + 65, 3, "temp", "Cel", 1)
    assert agg.add("a", T0 + 125, 4, "temp", "Cel", 1) == []


def test_flush_with_now_closes_only_windows_due_by_then():
    agg = Aggregator(window_s=60, lateness_s=30)
    feed(agg, [(T0 + 10, 1, 1)], device="quiet")
    feed(agg, [(T0 + 100, 1, 2)], device="busy")
    assert [(a.device_id, a.window_start - T0) for a in agg.flush(now=T0 + 90)] == [("quiet", 0)]
    assert agg.flush(now=T0 + 149) == []
    assert [(a.device_id, a.window_start - T0) for a in agg.flush(now=T0 + 150)] == [("busy", 60)]


# --- what each window says -------------------------------------------------------------


def test_last_is_the_latest_time_with_ties_going_to_the_higher_seq():
    agg = Aggregator(window_s=60)
    feed(agg, [(T0 + 30, 7, D("21.7")), (T0 + 30, 6, D("21.6")), (T0 + 10, 9, D("21.9"))])
    (a,) = agg.flush()
    # seq 7 and 6 share the latest time: the higher seq wins; seq 9's clock said earlier
    assert (a.last, a.first_seq, a.last_seq) == (D("21.7"), 6, 9)


def test_stdev_is_the_population_standard_deviation_and_zero_for_one_reading():
    agg = Aggregator(window_s=60)
    feed(agg, [(T0, 1, 2), (T0 + 1, 2, 4), (T0 + 2, 3, 4), (T0 + 3, 4, 4), (T0 + 4, 5, 5),
               (T0 + 5, 6, 5), (T0 + 6, 7, 7), (T0 + 7, 8, 9)])
    feed(agg, [(T0 + 8, 9, 21)], name="hum", unit="%RH")
    by_name = {a.name: a for a in agg.flush()}
    assert (by_name["temp"].mean, by_name["temp"].stdev) == (5.0, 2.0)
    assert (by_name["hum"].count, by_name["hum"].stdev) == (1, 0.0)


def test_stdev_stays_accurate_on_a_large_offset():
    # a sum-of-squares formula loses every digit here; Welford's update does not
    values = [1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16]
    agg = Aggregator(window_s=60)
    feed(agg, [(T0 + i, i, v) for i, v in enumerate(values)])
    (a,) = agg.flush()
    assert math.isclose(a.stdev, statistics.pstdev(values), rel_tol=1e-12)
    assert a.mean == statistics.fmean(values)


def test_decimals_stay_exact_in_min_max_last_and_the_cbor_map_holds_plain_values():
    agg = Aggregator(window_s=60)
    feed(agg, [(T0, 1, D("21.53")), (T0 + 1, 2, D("21.49")), (T0 + 2, 3, D("21.51"))])
    feed(agg, [(T0, 1, 100812), (T0 + 1, 2, 100815)], name="press", unit="Pa")
    feed(agg, [(T0, 1, 3)], name="count", unit=None)
    by_name = {a.name: a for a in agg.flush()}
    temp, press, count = by_name["temp"], by_name["press"], by_name["count"]
    assert (temp.min, temp.max, temp.last) == (D("21.49"), D("21.53"), D("21.51"))
    m = temp.to_cbor_map()
    assert m == {"device_id": DEV, "name": "temp", "unit": "Cel", "window_start": T0, "window_end": T0 + 60,
                 "count": 3, "min": 21.49, "max": 21.53, "mean": m["mean"], "stdev": m["stdev"], "last": 21.51,
                 "first_seq": 1, "last_seq": 3}
    assert math.isclose(m["mean"], 21.51) and (repr(m["min"]), repr(m["max"])) == ("21.49", "21.53")
    assert (press.to_cbor_map()["min"], type(press.to_cbor_map()["max"])) == (100812, int)
    assert "unit" not in count.to_cbor_map()
    for a in (temp, press, count):
        plain = a.to_cbor_map()
        assert all(type(v) in (int, float, str) for v in plain.values())
        assert cbor2.loads(cbor2.dumps(plain)) == plain


def test_a_unit_change_never_mixes_values():
    agg = Aggregator(window_s=60)
    agg.add(DEV, T0, 1, "temp", "Cel", 21)
    agg.add(DEV, T0 + 1, 2, "temp", "K", 294)
    assert sorted((a.unit, a.count, a.max) for a in agg.flush()) == [("Cel", 1, 21), ("K", 1, 294)]


# --- what cannot be aggregated ----------------------------------------------------------


def test_a_reading_without_time_is_refused_explicitly():
    agg = Aggregator()
    with pytest.raises(TimeUnknown) as err:
        agg.add(DEV, None, 5, "temp", "Cel", D("21.5"))
    assert err.value.code == "time_unknown"
    assert str(err.value) == "esp32-0007 #5 temp: the node's clock was not set, so no window can hold it"
    assert agg.open_windows == 0


@pytest.mark.parametrize("value", ["ok", True, float("nan"), D("Infinity"), 10**400])
def test_values_that_are_not_finite_numbers_are_refused(value):
    agg = Aggregator()
    with pytest.raises(NotANumber) as err:
        agg.add(DEV, T0, 5, "health", None, value)
    assert err.value.code == "not_a_number" and str(err.value).startswith("esp32-0007 #5 health: value ")
    assert agg.open_windows == 0


@pytest.mark.parametrize("window_s, lateness_s, key", [(0, 0, "window_s"), (60.0, 0, "window_s"),
                                                       (True, 0, "window_s"), (60, -1, "lateness_s")])
def test_bad_window_settings_name_the_setting(window_s, lateness_s, key):
    with pytest.raises(AggregateConfigError) as err:
        Aggregator(window_s, lateness_s)
    assert err.value.key == key and str(err.value).startswith(f"aggregate config {key} = ")


def test_from_config_takes_the_gateway_config_table_and_names_unknown_keys():
    agg = Aggregator.from_config({"window_s": 300, "lateness_s": 60})
    assert (agg.window_s, agg.lateness_s) == (300, 60)
    assert Aggregator.from_config(None).window_s == 60
    with pytest.raises(AggregateConfigError) as err:
        Aggregator.from_config({"window": 60})
    assert str(err.value) == "aggregate config window = 60: not a setting here (known: window_s, lateness_s)"


# --- bounded memory ------------------------------------------------------------------------


def test_open_windows_stay_bounded_across_many_devices_and_windows():
    agg = Aggregator(window_s=60, lateness_s=60)
    devices = [f"node-{i}" for i in range(500)]
    most_open = 0
    closed = 0
    for w in range(40):
        for k in range(3):
            t = T0 + w * 60 + k * 20
            for d in devices:
                closed += len(agg.add(d, t, w * 3 + k, "temp", "Cel", k))
                closed += len(agg.add(d, t, w * 3 + k, "hum", "%RH", k))
            most_open = max(most_open, agg.open_windows)
    # per device and quantity: the window filling and the one within lateness behind it
    assert most_open <= len(devices) * 2 * 2
    closed += len(agg.flush())
    assert agg.open_windows == 0 and closed == len(devices) * 2 * 40


# --- cross-check with the statistics module ------------------------------------------------

values = st.one_of(
    st.decimals(min_value=-40, max_value=85, places=2),
    st.integers(min_value=30000, max_value=110000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)


@st.composite
def arrivals(draw, max_disorder: int):
    """Readings of up to three devices as they arrive: (device, time, seq, value).

    Each device's clock runs forward (seq with it); a reading may arrive after
    others up to max_disorder seconds newer than itself.
    """
    streams = []
    for device in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        n = draw(st.integers(1, 40))
        gaps = draw(st.lists(st.integers(0, 45), min_size=n, max_size=n))
        jitter = draw(st.lists(st.integers(0, max_disorder), min_size=n, max_size=n))
        vals = draw(st.lists(values, min_size=n, max_size=n))
        times = [T0 + draw(st.integers(0, 59)) + sum(gaps[: i + 1]) for i in range(n)]
        order = sorted(range(n), key=lambda i: (times[i] + jitter[i], i))
        streams.append([(device, times[i], i, vals[i]) for i in order])
    picks = draw(st.permutations([k for k, s in enumerate(streams) for _ in s]))
    positions = [0] * len(streams)
    out = []
    for k in picks:
        out.append(streams[k][positions[k]])
        positions[k] += 1
    return out


def run(window_s, lateness_s, stream):
    """Aggregates (keyed by device and window start) and late readings; checks when windows closed."""
    agg = Aggregator(window_s, lateness_s)
    aggregates = {}
    late = []
    newest = {}
    for device, time, seq, value in stream:
        try:
            closed = agg.add(device, time, seq, "temp", "Cel", value)
        except LateReading as e:
            late.append((device, seq))
            assert e.window_end + lateness_s <= newest[device]
            continue
        newest[device] = max(newest.get(device, time), time)
        for a in closed:
            assert a.window_end + lateness_s <= newest[device]
            assert (a.device_id, a.window_start) not in aggregates
            aggregates[a.device_id, a.window_start] = a
    for a in agg.flush():
        assert a.window_end + lateness_s > newest[a.device_id]  # still open: the watermark had not passed
        assert (a.device_id, a.window_start) not in aggregates
        aggregates[a.device_id, a.window_start] = a
    return aggregates, late


def expected(window_s, stream, late):
    windows = defaultdict(list)
    for device, time, seq, value in stream:
        if (device, seq) not in late:
            windows[device, time - time % window_s].append((time, seq, value))
    return windows


def check_against_statistics(aggregates, windows, window_s):
    assert set(aggregates) == set(windows)
    for key, readings in windows.items():
        a = aggregates[key]
        exact = [Fraction(v) for _, _, v in readings]
        scale = max(abs(float(v)) for v in exact)
        assert a.window_end - a.window_start == window_s
        assert a.count == len(readings)
        assert a.min == min(v for _, _, v in readings) and a.max == max(v for _, _, v in readings)
        assert math.isclose(a.mean, float(statistics.mean(exact)), rel_tol=1e-9, abs_tol=1e-12 * scale + 1e-300)
        assert math.isclose(a.stdev, statistics.pstdev(exact), rel_tol=1e-7, abs_tol=1e-9 * scale)
        assert a.last == max(readings, key=lambda r: (r[0], r[1]))[2]
        assert (a.first_seq, a.last_seq) == (min(r[1] for r in readings), max(r[1] for r in readings))


@given(st.sampled_from([10, 60, 300]), st.integers(0, 120), st.data())
def test_out_of_order_within_lateness_every_reading_counts_once_as_statistics_says(window_s, lateness_s, data):
    stream = data.draw(arrivals(max_disorder=lateness_s))
    aggregates, late = run(window_s, lateness_s, stream)
    assert late == []
    assert sum(a.count for a in aggregates.values()) == len(stream)
    check_against_statistics(aggregates, expected(window_s, stream, set()), window_s)


@given(st.sampled_from([10, 60]), st.integers(0, 30), st.data())
def test_beyond_lateness_readings_are_late_or_counted_never_both(window_s, lateness_s, data):
    stream = data.draw(arrivals(max_disorder=300))
    aggregates, late = run(window_s, lateness_s, stream)
    assert sum(a.count for a in aggregates.values()) + len(late) == len(stream)
    check_against_statistics(aggregates, expected(window_s, stream, set(late)), window_s)
