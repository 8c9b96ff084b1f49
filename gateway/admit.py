"""The admit stage: what a message must pass before it costs a signature check.

- **The crash guard** (govedge.core.crashguard): a message the gateway process died
  on is handled alone when it comes again, and refused (``internal_error``)
  once it has ended the process with nobody else in hand.
- **A fair share per sender.** A sender is the device whose topic the message
  came on (the broker lets each device publish only to its own topics) or the
  serial port it came from. Each sender has a bucket of ``burst`` messages that
  refills at ``rate_per_s``; a message that finds its sender's bucket empty is
  quarantined as ``over_share`` without being decoded or verified, and
  acknowledged. The defaults (4096 messages, 10 a second) let a node replay a
  full flash buffer after an outage (256 slots by default) sixteen times over
  and send a reading every 0.1 s without ever touching them; a device, or
  someone with its broker password, flooding its topic costs the gateway a
  hash and a row each beyond that, and its rows in quarantine push out only
  its own older rows (govedge.gateway.store, ``trim_quarantine``).

And what a message must pass after its signature checked out, before it is stored
(``Checks``): the topic's device must be the signer, the node's time may be at most
``max_future_s`` ahead of the gateway's, and the sequence number must be above the
device's last accepted one.
"""

from __future__ import annotations

import time
from typing import Callable

from govedge.core import topics, wire
from govedge.core.crashguard import POISON, CrashGuard
from govedge.core.errors import Refusal

from .ingest import Inbound

MAX_SENDERS = 100_000  # buckets kept; full ones are forgotten first (a full bucket is a fresh one)


# the verdict on a message received again byte for byte: counted and acknowledged, not quarantined
DUPLICATE = Refusal("duplicate", "received again byte for byte: the gateway has it")


def sender_of(source: str) -> str:
    """The sender a message is accounted to: the device of its topic, or the serial port."""
    device = topics.device_of(source)
    if device is not None:
        return device
    return source.rsplit("/", 1)[0] if source.startswith("serial:") else source


class FairShare:
    """A token bucket per sender."""

    def __init__(self, burst: int, rate_per_s: float, clock: Callable[[], float] = time.monotonic):
        self.burst = float(burst)
        self.rate = float(rate_per_s)
        self.clock = clock
        self.buckets: dict[str, list[float]] = {}  # sender -> [tokens, when they were counted]

    def take(self, sender: str) -> bool:
        """One message of the sender's share: True if it may go on."""
        now = self.clock()
        bucket = self.buckets.get(sender)
        if bucket is None:
            if len(self.buckets) >= MAX_SENDERS:
                self.forget_full()
            bucket = self.buckets[sender] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def over_share(self, sender: str) -> Refusal:
        return Refusal("over_share", f"{sender} sent more than its share ({self.burst:.0f} messages at once, "
                                     f"{self.rate:g} a second after that)")

    def forget_full(self) -> None:
        """Drops the buckets that have refilled: a sender met again starts with a full one anyway."""
        now = self.clock()
        for sender in [s for s, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst]:
            del self.buckets[sender]


class Checks:
    """The checks of a verified message, in order: topic, clock, replay.

    ``last_seq`` and ``message_of`` read the store (a device's last accepted sequence
    number, a stored message); the caller notes each message it stores in ``last_seq``."""

    def __init__(self, max_future_s: int, last_seq: Callable[[str], int | None],
                 message_of: Callable[[str, int], bytes | None]):
        self.max_future_s = max_future_s
        self.stored_last_seq = last_seq
        self.stored_message = message_of
        self.last_seq: dict[str, int] = {}  # device -> the last sequence number stored by this process

    def refusal(self, reading: wire.Reading, topic_device: str | None) -> Refusal | None:
        """None if the reading may be stored; DUPLICATE if it is stored already; else why not."""
        device = reading.device_id
        if topic_device is not None and topic_device != device:
            return Refusal("wrong_topic", f"published on the topic of {topic_device!r} but signed by {device!r}")
        if reading.time is not None and reading.time > time.time() + self.max_future_s:
            return Refusal("future_time",
                           f"reading time {reading.time} is more than {self.max_future_s} s ahead of the gateway")
        last = self.last_seq.get(device)
        if last is None:
            last = self.stored_last_seq(device)
        if last is not None and reading.seq <= last:
            if self.stored_message(device, reading.seq) == reading.message:
                return DUPLICATE  # sent again after a reboot or a lost ack: we have it
            return Refusal("replayed", f"sequence number {reading.seq} of {device!r} is not above the last "
                                       f"accepted one ({last})")
        return None


def admit(items: list[Inbound], guard: CrashGuard, share: FairShare) -> tuple[list[Inbound],
                                                                                list[tuple[Inbound, Refusal]]]:
    """(the messages that go on to verification, those refused unverified): a message the process
    died on alone (the crash guard's poison), and messages over their sender's share."""
    admitted: list[Inbound] = []
    refused: list[tuple[Inbound, Refusal]] = []
    for item in items:
        sender = sender_of(item.source)
        if guard.verdict(item.payload) == POISON:
            refused.append((item, Refusal("internal_error", guard.poison_note(item.payload))))
        elif not share.take(sender):
            refused.append((item, share.over_share(sender)))
        else:
            admitted.append(item)
    return admitted, refused
