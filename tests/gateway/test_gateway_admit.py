"""The admit stage on its own: the checks of a verified message before it is stored, and the admission
before verification, each a verdict value (no store, no service)."""

from __future__ import annotations

import time

from govedge.core import crashguard, topics
from govedge.core.wire import Reading
from govedge.gateway.admit import DUPLICATE, Checks, FairShare, Refusal, admit
from govedge.gateway.clocksync import GatewayClock
from govedge.gateway.ingest import Inbound


def reading(device: str, seq: int, t: float | None = None, message: bytes = b"signed") -> Reading:
    return Reading(device, seq, t, (), message, b"", b"", b"")


def checks(stored: dict[tuple[str, int], bytes] | None = None, clock: GatewayClock | None = None) -> Checks:
    """``clock``: the gateway's; by default the system's time, synchronized."""
    stored = stored or {}
    return Checks(300, lambda d: max((s for dev, s in stored if dev == d), default=None),
                  lambda d, s: stored.get((d, s)), clock=clock or GatewayClock("yes"))


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
        "replayed", "sequence number 40 of 'esp32-0202' is not above the last accepted one (50)")


def test_a_message_received_again_byte_for_byte_is_a_duplicate_and_the_noted_sequence_number_counts():
    c = checks({("esp32-0001", 3): b"three"})
    assert c.refusal(reading("esp32-0001", 3, message=b"three"), None) is DUPLICATE
    c.last_seq["esp32-0001"] = 9  # what the caller notes when it stores seq 9 in this transaction
    assert c.refusal(reading("esp32-0001", 7), None).code == "replayed"


def test_admission_refuses_poison_and_a_sender_over_its_share_unverified(tmp_path):
    guard = crashguard.CrashGuard(tmp_path / "handling")
    share = FairShare(2, 0.0, clock=lambda: 0.0)
    items = [Inbound(topics.reading("esp32-0001"), bytes([i]), lambda: None) for i in range(3)]
    admitted, refused = admit(items, guard, share)
    guard.close()
    assert admitted == items[:2]
    assert refused == [(items[2], Refusal("over_share", "esp32-0001 sent more than its share (2 messages at once, "
                                                        "0 a second after that)"))]
