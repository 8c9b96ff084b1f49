"""The admit stage on its own: the checks of a verified message before it is stored, and the admission
before verification, each a verdict value (no store, no service)."""

from __future__ import annotations

import time

from govedge.core import crashguard, topics
from govedge.core.wire import Reading
from govedge.gateway.admit import DUPLICATE, MAX_GAPS, REPLAY_WINDOW, Checks, FairShare, Refusal, SeqState, admit
from govedge.gateway.clocksync import GatewayClock
from govedge.gateway.ingest import Inbound


def reading(device: str, seq: int, t: float | None = None, message: bytes = b"signed") -> Reading:
    return Reading(device, seq, t, (), message, b"", b"", b"")


def checks(stored: dict[tuple[str, int], bytes] | None = None, clock: GatewayClock | None = None) -> Checks:
    """``clock``: the gateway's; by default the system's time, synchronized. The replay window of a device
    with stored readings is that of a store from before windows: everything below its highest was accepted."""
    stored = stored or {}

    def state(space: str) -> SeqState | None:
        last = max((s for dev, s in stored if dev == space), default=None)
        return None if last is None else SeqState(last)
    return Checks(300, state, lambda d, s: stored.get((d, s)), clock=clock or GatewayClock("yes"))


def test_a_reading_on_its_own_topic_in_time_and_after_the_last_one_passes():
    c = checks({("esp32-0001", 4): b"old"})
    assert c.refusal(reading("esp32-0001", 5, time.time()), "esp32-0001") is None
    assert c.refusal(reading("esp32-0001", 5), None) is None  # a serial port names no device; no clock: no check


def test_topic_then_clock_then_replay_each_with_its_code_and_reason():
    c = checks({("esp32-0202", 50): b"fifty"})
    late = time.time() + 3600
    assert c.refusal(reading("esp32-0202", 40, late), "esp32-0007") == Refusal(
        "wrong_topic", "published on the topic of 'esp32-0007' but signed by 'esp32-0202'")
    refusal = c.refusal(reading("esp32-0202", 40, late), "esp32-0202")
    assert refusal.code == "future_time"
    assert refusal.reason == (f"reading time {late} is more than 300 s ahead of the gateway, whose clock is "
                              "synchronized: the node's clock is wrong")
    assert c.refusal(reading("esp32-0202", 40), "esp32-0202") == Refusal(
        "replayed", "sequence number 40 of 'esp32-0202' was accepted before, or lies more than 65536 below the "
                    "last accepted one (50)")


def test_a_message_received_again_byte_for_byte_is_a_duplicate_and_the_noted_sequence_number_counts():
    c = checks({("esp32-0001", 3): b"three"})
    assert c.refusal(reading("esp32-0001", 3, message=b"three"), None) is DUPLICATE
    c.stored(reading("esp32-0001", 9), "esp32-0001")  # what the caller notes when it stores seq 9
    assert c.refusal(reading("esp32-0001", 7), None) is None  # a gap: 4..8 were never accepted
    c.stored(reading("esp32-0001", 7), "esp32-0001")
    assert c.refusal(reading("esp32-0001", 7), None).code == "replayed"
    assert c.refusal(reading("esp32-0001", 9), None).code == "replayed"


def test_readings_a_broker_lost_come_in_after_newer_ones_once_each():
    """A power cut of the gateway Pi loses what its broker held: 1..40 of a node come after 41..137."""
    c = checks()
    for seq in [0, *range(41, 138), *range(1, 41)]:
        assert c.refusal(reading("esp32-0600", seq), "esp32-0600") is None, seq
        c.stored(reading("esp32-0600", seq), "esp32-0600")
    assert c.spaces["esp32-0600"] == SeqState(137, ())
    for seq in (0, 1, 40, 41, 137):
        assert c.refusal(reading("esp32-0600", seq), "esp32-0600").code == "replayed"
    # the first reading a gateway ever sees of a node opens the window below it
    c.stored(reading("esp32-0601", 40), "esp32-0601")
    assert c.refusal(reading("esp32-0601", 0), "esp32-0601") is None


def test_the_window_reaches_replay_window_numbers_back_and_keeps_the_newest_max_gaps_gaps():
    state = SeqState.first(10)
    assert state.gaps == ((0, 9),)
    state = state.taking(REPLAY_WINDOW + 15)  # the window now starts at 15
    assert [n for n in range(20) if state.open(n)] == [15, 16, 17, 18, 19]
    state = state.taking(state.last + REPLAY_WINDOW + 1)  # the old gap lies wholly behind the window now
    assert state.gaps == ((10 + REPLAY_WINDOW + 6, state.last - 1),)
    for _ in range(MAX_GAPS + 5):  # a node rebooting again and again skips the rest of each reserved block
        state = state.taking(state.last + 2)
    assert len(state.gaps) == MAX_GAPS and state.open(state.last - 1) and not state.open(state.last - 2 * MAX_GAPS - 8)
    assert SeqState.parse(state.last, state.text()) == state
    assert SeqState.parse(7, "") == SeqState(7) and SeqState.parse(7, None) == SeqState(7)


def test_admission_refuses_poison_and_a_sender_over_its_share_unverified(tmp_path):
    guard = crashguard.CrashGuard(tmp_path / "handling")
    share = FairShare(2, 0.0, clock=lambda: 0.0)
    items = [Inbound(topics.reading("esp32-0001"), bytes([i]), lambda: None) for i in range(3)]
    admitted, refused = admit(items, guard, share)
    guard.close()
    assert admitted == items[:2]
    assert refused == [(items[2], Refusal("over_share", "esp32-0001 sent more than its share (2 messages at once, "
                                                        "0 a second after that)"))]
