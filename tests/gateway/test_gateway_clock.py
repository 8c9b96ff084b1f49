"""A wrong clock, the gateway's or a node's, never costs a correctly signed reading.

A Raspberry Pi has no hardware clock: after a power cut it runs in the past until NTP has synchronized
it, and correct readings look as if they came from the future. The gateway decides by whether its own
clock is known to be synchronized (govedge.gateway.clocksync): not known, a reading ahead is stored,
batched and flagged ``clock_unsynced``; synchronized, the node's clock is wrong and the reading is
quarantined whole (``future_time``). A reading timed before the product existed is ``time_before_floor``;
a node whose clock was never set sends no time and passes as before.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from govedge.core import topics
from govedge.core.config import ConfigError
from govedge.core.wire import Reading
from govedge.gateway import clocksync
from govedge.gateway import config as gwconfig
from govedge.gateway import health
from govedge.gateway import store as gwstore
from govedge.gateway.admit import CLOCK_UNSYNCED, Checks, Refusal
from govedge.gateway.clocksync import TIME_FLOOR, GatewayClock
from govedge.gateway.service import Gateway
from govedge.tools import cli
from support import firmware, scalar, wait_until
from support.hubkit import World, publish
from support.rig import running  # noqa: F401 - the fixture

from test_gateway_isolation import Acks, drain_all, make_gateway, rows

DAY = 86_400
DEVICE = "esp32-0001"


def signed(seq: int, t: float | None) -> bytes:
    return firmware("reading").signed_reading(scalar(DEVICE), DEVICE, seq, None if t is None else int(t),
                                              [("temp", "Cel", 2150)])


def make_gateway_with_clock(folder: Path, world: World, clock: GatewayClock) -> Gateway:
    made = make_gateway(folder, world)  # writes gateway.toml and the key
    made.store.close()
    made.guard.close()
    made.verifier.close()
    return Gateway(made.cfg, clock=clock)


def test_a_reading_a_day_ahead_of_an_unsynchronized_gateway_clock_is_stored_not_quarantined(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world, verify='clock_synchronized = "no"\n')
    acks = Acks()
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), signed(0, time.time() + DAY))])
    assert len(acks.acked) == 1
    assert rows(gw, "SELECT seq FROM readings") == [(0,)]
    assert rows(gw, "SELECT code FROM quarantine") == []


# -- the clock module -------------------------------------------------------------------------


def test_the_kernel_is_really_asked_through_adjtimex_and_answers_a_bool_or_none():
    assert clocksync.kernel_synchronized() in (True, False, None)
    assert GatewayClock().synchronized() in (True, False, None)


def test_auto_believes_the_kernel_and_falls_back_on_timesyncds_flag_file(tmp_path):
    flag = tmp_path / "synchronized"
    assert GatewayClock(kernel=lambda: True, flag_file=flag).synchronized() is True
    assert GatewayClock(kernel=lambda: False, flag_file=flag).synchronized() is False
    assert GatewayClock(kernel=lambda: None, flag_file=flag).synchronized() is None  # nobody can tell
    flag.touch()
    assert GatewayClock(kernel=lambda: None, flag_file=flag).synchronized() is True
    assert GatewayClock(kernel=lambda: False, flag_file=flag).synchronized() is False  # the kernel knows better


def test_the_setting_overrides_the_kernel_but_a_clock_before_the_floor_is_never_synchronized():
    assert GatewayClock("yes", kernel=lambda: False).synchronized() is True
    assert GatewayClock("no", kernel=lambda: True).synchronized() is False
    in_1970 = GatewayClock("yes", now=lambda: 42.0, kernel=lambda: True)
    assert in_1970.synchronized() is False
    state, ok = in_1970.state()
    assert not ok and state.startswith("NOT synchronized (it reads a time before 2024)")
    assert GatewayClock("yes").state() == ("synchronized (clock_synchronized = 'yes')", True)
    with pytest.raises(ValueError, match="clock_synchronized must be one of auto, yes, no, not 'maybe'"):
        GatewayClock("maybe")


def test_a_wrong_clock_synchronized_setting_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r'^\[verify\] clock_synchronized = true: expected one of "auto", "yes", "no"$'):
        gwconfig.parse({"gateway": {"id": "gw", "key_file": "k", "data_dir": "d", "registry": "r"},
                        "verify": {"clock_synchronized": True}})


# -- the checks -------------------------------------------------------------------------------


def checks(clock: GatewayClock) -> Checks:
    return Checks(300, lambda space: None, lambda device, seq: None, clock=clock)


def reading(t: float | None, seq: int = 1) -> Reading:
    return Reading(DEVICE, seq, t, (), b"signed", b"", b"", b"")


def test_ahead_of_an_unsynchronized_or_unknown_clock_passes_flagged_ahead_of_a_synchronized_one_is_future_time():
    behind = lambda: time.time() - DAY  # noqa: E731 - a Pi booted after a power cut, NTP not there yet
    tomorrow = reading(time.time())  # correct, but a day ahead of that gateway
    for clock in (GatewayClock("no", now=behind), GatewayClock(now=behind, kernel=lambda: None,
                                                               flag_file=Path("/nonexistent/flag"))):
        c = checks(clock)
        assert c.refusal(tomorrow, DEVICE) is None
        assert c.clock_flag(tomorrow) == CLOCK_UNSYNCED
    c = checks(GatewayClock("yes", now=behind))
    refusal = c.refusal(tomorrow, DEVICE)
    assert refusal.code == "future_time" and "whose clock is synchronized: the node's clock is wrong" in refusal.reason
    in_time = reading(time.time() - DAY + 299)
    assert c.refusal(in_time, DEVICE) is None and c.clock_flag(in_time) is None


def test_a_time_before_the_floor_is_refused_whatever_the_clock_and_an_unset_time_passes_unflagged():
    for setting in ("yes", "no"):
        c = checks(GatewayClock(setting))
        refusal = c.refusal(reading(TIME_FLOOR - 1), DEVICE)
        assert refusal == Refusal("time_before_floor", f"reading time {TIME_FLOOR - 1} is before {TIME_FLOOR} "
                                                       "(2024-01-01): the node's clock was set wrong")
        assert c.refusal(reading(TIME_FLOOR), DEVICE) is None
        assert c.refusal(reading(None), DEVICE) is None and c.clock_flag(reading(None)) is None


# -- the service, without brokers ---------------------------------------------------------------


def test_flagged_readings_are_stored_batched_counted_and_refused_ones_are_kept_whole(tmp_path):
    world = World(tmp_path / "w", devices=1)
    offset = [DAY]
    clock = GatewayClock("no", now=lambda: time.time() - offset[0])
    gw = make_gateway_with_clock(tmp_path / "gw", world, clock)
    acks = Acks()
    now = time.time()
    ahead, unset, old = signed(0, now), signed(1, None), signed(2, TIME_FLOOR - DAY)
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), m) for m in (ahead, unset, old)])
    assert len(acks.acked) == 3
    assert rows(gw, "SELECT seq, clock_flag FROM readings ORDER BY seq") == [(0, "clock_unsynced"), (1, None)]
    assert gw.counters["clock_unsynced"] == 1
    assert rows(gw, "SELECT code, message, size FROM quarantine") == [("time_before_floor", old, len(old))]
    gw.batcher.maybe_batch(force=True)
    assert rows(gw, "SELECT count(*) FROM readings WHERE batch_seq IS NULL") == [(0,)]
    # NTP syncs: from now on a reading a day ahead is the node's fault, kept whole in quarantine
    offset[0], clock.setting = 0, "yes"
    wrong = signed(3, time.time() + DAY)
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), m) for m in (signed(4, time.time()), wrong)])
    assert rows(gw, "SELECT seq, clock_flag FROM readings WHERE seq > 1") == [(4, None)]
    assert rows(gw, "SELECT code, message, size FROM quarantine WHERE code = 'future_time'") == [
        ("future_time", wrong, len(wrong))]
    assert len(acks.acked) == 5
    gw.store.close()


def test_a_store_from_before_the_clock_flag_gets_the_column_and_keeps_its_readings(tmp_path):
    path = tmp_path / "gateway.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, "
                "kind TEXT NOT NULL, node_time INTEGER, received_at REAL NOT NULL, message BLOB NOT NULL, "
                "batch_seq INTEGER, UNIQUE (device_id, seq))")
    old.execute("INSERT INTO readings (device_id, seq, kind, node_time, received_at, message) "
                "VALUES ('esp32-0001', 7, 'reading', NULL, 1.0, x'00')")
    old.commit()
    old.close()
    store = gwstore.Store(path)
    with store:
        store.add_reading(DEVICE, 8, "reading", 1_800_000_000, b"\x01", None, CLOCK_UNSYNCED)
    assert store.db.execute("SELECT seq, clock_flag FROM readings ORDER BY seq").fetchall() == [
        (7, None), (8, "clock_unsynced")]
    store.close()


# -- a running gateway, real brokers ------------------------------------------------------------


def count(gw: Gateway, sql: str) -> int:
    db = sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True)  # the service's connection is its own
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def test_a_gateway_a_day_behind_and_unsynchronized_forwards_everything_then_its_clock_is_corrected(running):
    """The Pi after a power cut: its clock a day behind, NTP not there yet. The nodes' readings (correctly
    timed, so a day ahead of it) reach the hub, flagged in the gateway's store; then NTP corrects the
    clock and everything goes on, unflagged."""
    offset = [DAY]
    kernel = [False]
    r = running(clock=GatewayClock(now=lambda: time.time() - offset[0], kernel=lambda: kernel[0]))
    gw, world, sub = r.gw, r.world, r.sub
    seqs = dict.fromkeys(world.devices, 0)

    def send(n: int) -> None:
        items = []
        for device in world.devices:
            for _ in range(n):
                items.append((topics.reading(device), firmware("reading").signed_reading(
                    scalar(device), device, seqs[device], int(time.time()), [("temp", "Cel", 2150)])))
                seqs[device] += 1
        publish(r.local.port, items)

    def status() -> str:
        return health.describe(health.status(gw.cfg))  # the service is this test process

    send(3)
    wait_until(lambda: len(sub.readings()) >= 6, what="the readings of the day-behind gateway at the hub")
    wait_until(lambda: "clock       PROBLEM: NOT synchronized" in status(), what="the clock in the status")
    assert "  flagged     6 readings timed ahead of the gateway's clock" in status()
    assert count(gw, "SELECT count(*) FROM readings WHERE clock_flag = 'clock_unsynced'") == 6
    assert r.metric("govedge_clock_synchronized") == 0
    assert r.metric("govedge_clock_unsynced_total") == 6
    kernel[0], offset[0] = True, 0  # NTP: synchronized and stepped forward by a day
    send(3)
    wait_until(lambda: len(sub.readings()) >= 12, what="the readings after the correction at the hub")
    wait_until(lambda: "clock       synchronized for" in status(), what="the corrected clock in the status")
    assert r.metric("govedge_clock_synchronized") == 1
    assert sorted(sub.readings()) == sorted((d, s) for d in world.devices for s in range(6))
    assert count(gw, "SELECT count(*) FROM readings WHERE clock_flag IS NULL") == 6
    assert count(gw, "SELECT count(*) FROM quarantine") == 0
    assert gw.counters["clock_unsynced"] == 6 and gw.counters["quarantined"] == 0
    assert not sub.errors


def test_future_time_messages_are_kept_whole_and_stored_by_replay_quarantine_once_the_clock_is_right(
        tmp_path, capsys):
    """A gateway told its clock is synchronized (``clock_synchronized = "yes"``) that was in fact a day behind
    quarantines correct readings as future_time; once its clock is right, `govedge gateway replay-quarantine`
    stores them. What is still refused keeps its row as it was."""
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway_with_clock(tmp_path / "gw", world, GatewayClock("yes", now=lambda: time.time() - DAY))
    acks = Acks()
    now = time.time()
    early = [signed(seq, now + seq) for seq in range(3)]
    old = signed(3, TIME_FLOOR - 1)
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), m) for m in [*early, old]])
    assert len(acks.acked) == 4 and rows(gw, "SELECT count(*) FROM readings") == [(0,)]
    assert rows(gw, "SELECT code, message FROM quarantine ORDER BY id") == [
        *(("future_time", m) for m in early), ("time_before_floor", old)]
    gw.store.close()
    gw.guard.close()
    config = str(tmp_path / "gw" / "gateway.toml")
    assert cli.main(["gateway", "replay-quarantine", "--config", config]) == 0  # the system's clock: right
    assert capsys.readouterr().out == ("3 future_time messages stored (they go out with the next batch), "
                                       "0 still refused (their quarantine rows stay)\n")
    assert cli.main(["gateway", "replay-quarantine", "--config", config, "--code", "time_before_floor"]) == 0
    assert capsys.readouterr().out.startswith("0 time_before_floor messages stored")
    db = sqlite3.connect(tmp_path / "gw" / "data" / "gateway.db")
    assert db.execute("SELECT seq, message FROM readings ORDER BY seq").fetchall() == list(enumerate(early))
    assert db.execute("SELECT code FROM quarantine").fetchall() == [("time_before_floor",)]
    db.close()
