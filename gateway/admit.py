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
"""

from __future__ import annotations

import time
from typing import Callable

from govedge.core import topics

MAX_SENDERS = 100_000  # buckets kept; full ones are forgotten first (a full bucket is a fresh one)


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

    def forget_full(self) -> None:
        """Drops the buckets that have refilled: a sender met again starts with a full one anyway."""
        now = self.clock()
        for sender in [s for s, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst]:
            del self.buckets[sender]
