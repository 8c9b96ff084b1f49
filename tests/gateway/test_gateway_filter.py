"""The gateway's filter stage: what it holds back, why, and what it lets through untouched."""

from __future__ import annotations

import tomllib
from collections import Counter
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from govedge.core import wire
from govedge.gateway.filter import (DEADBAND, RANGE, RATE, SPIKE, Filter, FilterConfigError)
from govedge.core.wire import Measurement, Reading
from support import firmware, public_key, scalar

UNITS = {"temp": "Cel", "hum": "%RH", "press": "Pa", "pm2_5": "ug/m3", "pm10": "ug/m3"}
T0 = 1_764_300_000


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def reading(time=T0, seq=1, device="esp32-0007", **values) -> Reading:
    ms = tuple(Measurement(name, UNITS.get(name), v) for name, v in values.items())
    return Reading(device, seq, time, ms, b"", b"", b"", b"")


def one(f: Filter, **kw):
    """(passed values, [(rule, reason)]) of one reading."""
    d = f.process(reading(**kw))
    return [m.value for m in d.passed], [(h.rule, h.reason) for h in d.held]


def series(f: Filter, values, name="temp", step=60, device="esp32-0007", start=T0):
    """Feed one value per reading, step seconds apart; the decisions in order."""
    return [f.process(reading(start + i * step, i, device, **{name: v})) for i, v in enumerate(values)]


# --- range ---------------------------------------------------------------

# (name, lowest plausible, highest plausible, just below, just above) per the datasheets
DATASHEET_LIMITS = [
    ("temp", -40, 85, D("-40.01"), D("85.01")),
    ("hum", 0, 100, D("-0.01"), D("100.01")),
    ("press", 30000, 110000, 29999, 110001),
    ("pm2_5", D("0.0"), D("999.9"), D("-0.1"), D("1000.0")),
    ("pm10", D("0.0"), D("999.9"), D("-0.1"), D("1000.0")),
]


@pytest.mark.parametrize("name, lo, hi, below, above", DATASHEET_LIMITS)
def test_datasheet_limits_pass_and_values_beyond_them_are_held(name, lo, hi, below, above):
    for value in (lo, hi):
        assert one(Filter(), **{name: value}) == ([value], [])
    for value in (below, above):
        passed, held = one(Filter(), **{name: value})
        assert passed == [] and [rule for rule, _ in held] == [RANGE]
        assert f"{name} {value} {UNITS[name]} outside plausible range" in held[0][1]


def test_range_reason_names_value_unit_and_range():
    assert one(Filter(), temp=D("412.5")) == ([], [(RANGE, "temp 412.5 Cel outside plausible range -40..85")])


def test_wrong_unit_and_text_values_are_held_as_implausible():
    f = Filter()
    d = f.process(Reading("esp32-0007", 1, T0, (Measurement("temp", "K", 294),
                                                 Measurement("hum", "%RH", "wet")), b"", b"", b"", b""))
    assert d.passed == ()
    assert [(h.rule, h.reason) for h in d.held] == [
        (RANGE, "temp given in K, expected Cel"),
        (RANGE, "hum value wet is not a number"),
    ]


def test_names_without_rules_pass_untouched():
    f = Filter()
    d = f.process(Reading("esp32-0007", 1, T0, (Measurement("health", None, "degraded"),
                                                 Measurement("uptime", "s", 10**9),
                                                 Measurement("time_set", None, False)), b"", b"", b"", b""))
    assert [m.value for m in d.passed] == ["degraded", 10**9, False] and d.held == ()


# --- spike (Hampel) --------------------------------------------------------

CALM = [D("21.50"), D("21.52"), D("21.49"), D("21.51"), D("21.53"), D("21.50")]


def test_spike_is_held_with_a_reason_and_the_series_goes_on():
    decisions = series(Filter(), CALM + [D("35.20"), D("21.52")])
    assert all(d.held == () for d in decisions[:6])
    (spike,) = decisions[6].held
    assert spike.rule == SPIKE and spike.measurement.value == D("35.20")
    assert spike.reason == ("temp 35.20 Cel is a spike: 13.69 from the median 21.51 of the last 7 values, "
                            "above the limit 1 = max(3 x 1.4826 x MAD 0.01, floor 1)")
    assert [m.value for m in decisions[7].passed] == [D("21.52")]


def test_values_pass_unjudged_until_the_window_is_full():
    # a jump within the range among the first six values: no median to judge it by yet
    decisions = series(Filter(), CALM[:3] + [D("60.00")] + CALM[3:5])
    assert all(d.held == () for d in decisions)


def test_step_change_is_held_until_the_window_sees_it_then_passes():
    decisions = series(Filter(), [D("20.00")] * 7 + [D("26.00")] * 6)
    rules = [[h.rule for h in d.held] for d in decisions]
    # window of 7: the new level is the median from its 4th value on
    assert rules == [[]] * 7 + [[SPIKE]] * 3 + [[]] * 3


def test_changes_within_the_sensor_accuracy_are_never_spikes():
    # a constant series has MAD 0; the floor (BME280: ±1 °C) keeps one step of noise out
    decisions = series(Filter(), [D("21.50")] * 7 + [D("22.40"), D("21.50")])
    assert all(d.held == () for d in decisions)


def test_spike_window_and_threshold_are_configurable():
    f = Filter({"quantities": {"press": {"spike_window": 3, "spike_threshold": 5, "spike_floor": 0}}})
    decisions = series(f, [100000, 100010, 100020, 100030, 100900], name="press")
    assert [[h.rule for h in d.held] for d in decisions] == [[], [], [], [], [SPIKE]]


# --- deadband with heartbeat -----------------------------------------------


def test_deadband_holds_small_changes_and_forwards_at_the_heartbeat():
    f = Filter({"quantities": {"temp": {"deadband": D("0.5"), "heartbeat_s": 300}}})
    values = [D("21.0"), D("21.1"), D("21.2"), D("21.1"), D("21.2"), D("21.3"), D("21.4"), D("22.0"), D("22.1")]
    decisions = series(f, values, step=60)
    forwarded = [(i * 60, d.passed[0].value) for i, d in enumerate(decisions) if d.passed]
    # t=0 first value, t=300 heartbeat, t=420 a change of 0.6 (> 0.5)
    assert forwarded == [(0, D("21.0")), (300, D("21.3")), (420, D("22.0"))]
    held = decisions[1].held[0]
    assert (held.rule, held.reason) == (
        DEADBAND, f"temp 21.1 Cel within deadband 0.5 of the last forwarded 21.0; heartbeat due at device time {T0 + 300}")


def test_deadband_compares_decimals_exactly():
    # 21.60 - 21.50 is exactly 0.10, not more than 0.1 (in binary floats it would be 0.10000000000000142)
    f = Filter({"quantities": {"temp": {"deadband": 0.1}}})
    decisions = series(f, [D("21.50"), D("21.60"), D("21.61")])
    assert [[h.rule for h in d.held] for d in decisions] == [[], [DEADBAND], []]


def test_deadband_is_off_unless_configured():
    decisions = series(Filter(), [D("21.50")] * 5)
    assert all(len(d.passed) == 1 for d in decisions)


# --- rate limit --------------------------------------------------------------


def test_rate_limit_allows_a_burst_then_refills_with_device_time():
    f = Filter({"rate": {"readings": 3, "per_s": 60}})
    outcomes = []
    for seq, t in enumerate([0, 1, 2, 3, 19, 20, 40, 41]):
        d = f.process(reading(T0 + t, seq, temp=D("21.5"), hum=D("48.2")))
        outcomes.append(len(d.held) == 2 and {h.rule for h in d.held} == {RATE})
    # 3 at once; then the bucket refills one reading per 20 s of device time: t=20, t=40
    assert outcomes == [False, False, False, True, True, False, False, True]
    d = f.process(reading(T0 + 42, 99, temp=D("21.5")))
    assert d.held[0].reason == "device esp32-0007 over its rate limit of 3 readings per 60 s of device time"


def test_rate_limit_bounds_a_runaway_device():
    f = Filter({"rate": {"readings": 10, "per_s": 60}})
    decisions = series(f, [D("21.5")] * 600, step=1)
    passed = sum(1 for d in decisions if d.passed)
    # token bucket: the burst of 10, then 10 per 60 s over the 599 s that follow
    assert passed == 10 + 599 * 10 // 60
    assert Counter(h.rule for d in decisions for h in d.held) == {RATE: 600 - passed}


def test_rate_limit_is_per_device():
    f = Filter({"rate": {"readings": 1, "per_s": 60}})
    assert [bool(f.process(reading(T0, 1, dev, temp=20)).passed) for dev in ("a", "b", "a", "b")] == \
        [True, True, False, False]


def test_readings_without_time_are_neither_rate_limited_nor_deadbanded():
    f = Filter({"rate": {"readings": 1, "per_s": 3600}, "quantities": {"temp": {"deadband": 5}}})
    decisions = [f.process(reading(None, i, temp=D("21.50"))) for i in range(20)]
    assert all(len(d.passed) == 1 for d in decisions)
    # ...but they are still checked for plausibility
    assert one(f, time=None, temp=D("412.5"))[1][0][0] == RANGE
    # and they leave the timed rules' state alone: the first timed reading passes both
    assert one(f, time=T0, temp=D("21.50"))[0] == [D("21.50")]


# --- configuration -------------------------------------------------------------


def test_per_device_overrides_apply_to_that_device_only():
    f = Filter({
        "rate": {"readings": 5, "per_s": 60},
        "devices": {"rooftop-1": {"quantities": {"temp": {"min": -20, "deadband": 1}},
                                  "rate": {"readings": 1}}},
    })
    assert one(f, device="rooftop-1", temp=-25) == ([], [(RANGE, "temp -25 Cel outside plausible range -20..85")])
    assert one(f, device="street-2", temp=-25) == ([-25], [])
    # the device's rate override keeps the default per_s; its deadband applies to it alone
    assert one(f, device="rooftop-1", time=T0 + 1, temp=-10)[1][0][0] == RATE
    assert one(f, device="street-2", time=T0 + 1, temp=-25)[0] == [-25]
    assert f.rules("rooftop-1", "temp").deadband == 1 and f.rules("street-2", "temp").deadband is None
    assert f.rules("rooftop-1", "hum") == f.rules("street-2", "hum")


def test_a_new_quantity_can_be_configured():
    f = Filter({"quantities": {"co2": {"unit": "ppm", "min": 400, "max": 5000}}})
    d = f.process(Reading("x", 1, T0, (Measurement("co2", "ppm", 12000),), b"", b"", b"", b""))
    assert d.held[0].reason == "co2 12000 ppm outside plausible range 400..5000"


@pytest.mark.parametrize("config, key", [
    ({"quantity": {}}, "quantity"),
    ({"quantities": {"temp": {"mn": 3}}}, "quantities.temp.mn"),
    ({"quantities": {"temp": {"min": "cold"}}}, "quantities.temp.min"),
    ({"quantities": {"temp": {"min": 90}}}, "quantities.temp.min"),
    ({"quantities": {"temp": {"spike_window": 2}}}, "quantities.temp.spike_window"),
    ({"quantities": {"temp": {"spike_threshold": 0}}}, "quantities.temp.spike_threshold"),
    ({"quantities": {"temp": {"deadband": -1}}}, "quantities.temp.deadband"),
    ({"quantities": {"temp": {"heartbeat_s": True}}}, "quantities.temp.heartbeat_s"),
    ({"rate": {"readings": 2.5}}, "rate.readings"),
    ({"rate": {"per_s": 0}}, "rate.per_s"),
    ({"forget_after_s": None}, "forget_after_s"),
    ({"devices": {"esp32-0007": {"rate": {"every": 3}}}}, "devices.esp32-0007.rate.every"),
    ({"devices": {"esp32-0007": {"quantities": {"hum": {"max": float("nan")}}}}},
     "devices.esp32-0007.quantities.hum.max"),
])
def test_bad_config_names_the_key_and_value(config, key):
    with pytest.raises(FilterConfigError) as err:
        Filter(config)
    assert err.value.key == key
    assert str(err.value).startswith(f"filter config {key} = ")


def test_a_config_written_in_toml_works_with_false_for_off():
    f = Filter(tomllib.loads("""
        rate = false
        [quantities.temp]
        deadband = 0.1
        spike_window = false
        [devices."esp32-0007".quantities.hum]
        max = 95.0
    """))
    assert f.rules("x", "temp").spike_window is None and f.rules("x", "temp").deadband == 0.1
    assert one(f, hum=D("96.00"))[1] == [(RANGE, "hum 96.00 %RH outside plausible range 0..95")]
    assert all(d.passed for d in series(f, [D("21.5"), D("40.0")] * 50, step=0))


def test_rate_limit_can_be_switched_off():
    f = Filter({"rate": None})
    assert all(d.passed for d in series(f, [D("21.5")] * 100, step=0))


# --- bounded state ----------------------------------------------------------------


def test_devices_idle_past_forget_after_s_are_forgotten():
    clock = FakeClock()
    f = Filter({"forget_after_s": 600, "rate": {"readings": 1, "per_s": 3600},
                "quantities": {"temp": {"deadband": 5}}}, clock=clock)
    for i in range(5000):
        f.process(reading(T0, i, f"node-{i}", temp=D("21.5")))
        clock.now += 0.1
    assert f.tracked_devices == 5000
    clock.now += 600
    # node-0 comes back: its bucket is full again and its deadband forwards at once
    assert one(f, device="node-0", time=T0 + 1, temp=D("21.5")) == ([D("21.5")], [])
    assert f.tracked_devices == 1


def test_spike_windows_have_a_fixed_size():
    f = Filter({"rate": None})
    series(f, [D("21.5")] * 10_000, step=1)
    assert len(f._devices["esp32-0007"].tracks["temp"].window) == 7


# --- exact values, end to end ----------------------------------------------------------


def test_decimals_from_a_signed_reading_pass_exactly_as_signed():
    d = scalar("filter-decimal")
    message = firmware("reading").signed_reading(
        d, "esp32-0007", 100000, T0, [("temp", "Cel", (2153, -2)), ("hum", "%RH", (4820, -2)),
                                      ("press", "Pa", 100812), ("pm2_5", "ug/m3", (357, -1))])
    r = wire.verify(message, lambda dev: [public_key(d)])
    decision = Filter().process(r)
    assert decision.passed == r.measurements
    assert all(a is b for a, b in zip(decision.passed, r.measurements))
    assert [(type(m.value), str(m.value)) for m in decision.passed] == [
        (D, "21.53"), (D, "48.20"), (int, "100812"), (D, "35.7")]


values = st.one_of(
    st.decimals(min_value=-60, max_value=120, places=2),
    st.integers(min_value=-60, max_value=120),
    st.floats(min_value=-60, max_value=120),
    st.text(max_size=3),
)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.one_of(st.none(), st.integers(0, 5000)),
                          st.dictionaries(st.sampled_from(["temp", "hum", "health"]), values, min_size=1)),
                max_size=60))
def test_every_measurement_either_passes_as_is_or_is_held_with_a_reason(stream):
    f = Filter({"rate": {"readings": 3, "per_s": 60}, "quantities": {"temp": {"deadband": D("0.2")}}})
    for seq, (device, offset, ms) in enumerate(stream):
        r = reading(None if offset is None else T0 + offset, seq, device, **ms)
        d = f.process(r)
        held = [h.measurement for h in d.held]
        assert sorted(map(id, d.passed + tuple(held))) == sorted(map(id, r.measurements))
        assert all(h.rule in (RATE, RANGE, SPIKE, DEADBAND) and h.reason.startswith(("device ", h.measurement.name))
                   for h in d.held)
