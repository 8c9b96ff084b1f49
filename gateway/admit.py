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
(``Checks``): the topic's device must be the signer; the node's time must not lie before
``TIME_FLOOR`` (``time_before_floor``: a node clock set wrong; a node whose clock is unset sends no
time and passes); more than ``max_future_s`` ahead of the gateway's clock, the gateway's clock
decides (govedge.gateway.clocksync): synchronized, the node's clock is wrong
(``future_time``, quarantined whole); not known to be synchronized, the gateway cannot tell who is
wrong, so the reading is stored and batched as any other and flagged ``clock_unsynced``
(``clock_flag``): a clock disagreement never costs a signed reading. Then the key that signed
it must still be valid for it (a retired or revoked key: ``retired_key``, ``revoked_key``; the rule is
govedge.core.registry's ``KeyRule``), and its sequence number must not have been accepted under the same
key before (``replayed``) and lie at most ``MAX_SEQ_JUMP`` above the last one accepted (``seq_jump``).
Sequence numbers are counted per key, so a leaked key that signed a huge one locks out only itself: the
device's next key starts afresh (docs/SECURITY.md, "Key lifecycle").

Messages do not arrive in order: a broker that dies (a power cut of the gateway Pi) loses what it held
for the gateway, the messages after them get through, and the node sends the lost ones again when
their acknowledgement does not come. So the replay protection is a window (as IPsec's, RFC 4303
section 3.4.3), kept per sequence space as ``SeqState``: the highest number accepted and the gaps below
it, the numbers not accepted yet within ``REPLAY_WINDOW`` of it. A number in a gap is accepted once
and closes its part of the gap; a number at or below the highest that lies in no gap was accepted
before (or lies further back than the window, or its gap was among the oldest when more than
``MAX_GAPS`` were open) and is ``replayed``. The first reading of a sequence space opens the window
below it: the readings a broker lost before it still come in.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, NamedTuple

from govedge.core import topics, wire
from govedge.core.crashguard import POISON, CrashGuard
from govedge.core.errors import Refusal

from .clocksync import TIME_FLOOR, GatewayClock
from .ingest import Inbound

if TYPE_CHECKING:
    from govedge.core.registry import Registry

MAX_SENDERS = 100_000  # buckets kept; full ones are forgotten first (a full bucket is a fresh one)
# how far a sequence number may lie above the last accepted one of its key (or above 0, the first):
# a node numbering ten readings a second gets there in 13 years; a node never skips more than it
# numbered, whatever it dropped from a full buffer or reserved in blocks across reboots
MAX_SEQ_JUMP = 2**32
# how far below the highest accepted number a reading not accepted yet is still taken in: a node sends
# its oldest waiting message again at the latest after 10 minutes without its acknowledgement, and
# numbers 65,536 messages in 1.8 hours at ten a second, in 45 days at one a minute
REPLAY_WINDOW = 1 << 16
MAX_GAPS = 1024  # gaps kept per sequence space; the oldest is closed first (a node rebooting opens one)

Gaps = tuple[tuple[int, int], ...]  # (first, last) of each run of numbers not accepted, ascending


class SeqState(NamedTuple):
    """What the replay protection knows of a sequence space: the highest number accepted and the gaps
    below it (within ``REPLAY_WINDOW``)."""
    last: int
    gaps: Gaps = ()

    def open(self, seq: int) -> bool:
        """Whether ``seq`` may still be accepted: above the highest, or in a gap."""
        if seq > self.last:
            return True
        if seq < self.last - REPLAY_WINDOW:
            return False
        for first, last in self.gaps:
            if seq < first:
                return False
            if seq <= last:
                return True
        return False

    def taking(self, seq: int) -> "SeqState":
        """The state once ``seq`` (open) is accepted."""
        if seq > self.last:
            gaps = self.gaps + ((self.last + 1, seq - 1),) if seq > self.last + 1 else self.gaps
            return SeqState(seq, window(gaps, seq))
        gaps = []
        for first, last in self.gaps:
            if first <= seq <= last:
                if first < seq:
                    gaps.append((first, seq - 1))
                if seq < last:
                    gaps.append((seq + 1, last))
            else:
                gaps.append((first, last))
        return SeqState(self.last, tuple(gaps))

    @classmethod
    def first(cls, seq: int) -> "SeqState":
        """The state of a sequence space whose first accepted reading is ``seq``."""
        return cls(seq, ((max(0, seq - REPLAY_WINDOW), seq - 1),) if seq > 0 else ())

    def text(self) -> str:
        """The gaps as kept in the store: 'a-b,c-d' ('' for none)."""
        return ",".join(f"{a}-{b}" for a, b in self.gaps)

    @classmethod
    def parse(cls, last: int, text: str | None) -> "SeqState":
        gaps = []
        for part in (text or "").split(","):
            if part:
                a, _, b = part.partition("-")
                gaps.append((int(a), int(b)))
        return cls(last, tuple(gaps))


def window(gaps: Gaps, last: int) -> Gaps:
    """The gaps that reach into ``REPLAY_WINDOW`` below ``last`` (the part of the oldest one below the window
    is closed by ``SeqState.open``), at most ``MAX_GAPS`` of them (the newest)."""
    if gaps and gaps[0][1] < last - REPLAY_WINDOW:
        gaps = tuple(g for g in gaps if g[1] >= last - REPLAY_WINDOW)
    if len(gaps) > MAX_GAPS:
        gaps = gaps[-MAX_GAPS:]
    return gaps


# the flag of a reading stored while it was ahead of a gateway clock not known to be synchronized
CLOCK_UNSYNCED = "clock_unsynced"

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
    """The checks of a verified message, in order: topic, clock, key, replay.

    ``seq_state`` and ``message_of`` read the store (the replay window of a sequence space as a
    ``SeqState``, None for one never seen; a stored message); ``registry`` gives the registry the
    readings were verified against (None: one sequence space per device, no key rules);
    ``bounds`` the store's learnt key boundaries; ``clock`` the gateway's clock (its time and whether
    it is synchronized; tests hand in one a day behind). The caller notes each message it stores with
    ``stored`` and stores it with its ``clock_flag``."""

    def __init__(self, max_future_s: int, seq_state: Callable[[str], SeqState | None],
                 message_of: Callable[[str, int], bytes | None], registry: Callable[[], "Registry"] | None = None,
                 bounds: "KeyBounds | None" = None, clock: GatewayClock | None = None):
        self.max_future_s = max_future_s
        self.clock = clock or GatewayClock()
        self.stored_state = seq_state
        self.stored_message = message_of
        self.registry = registry
        self.bounds = bounds
        self.spaces: dict[str, SeqState] = {}  # sequence space -> its window, once this process looked it up

    def space(self, reading: wire.Reading) -> str:
        """The sequence space a reading counts in: its device's, per key (``DEVICE KEYID``) with a registry."""
        if self.registry is None:
            return reading.device_id
        return reading.device_id + " " + self.registry().key_rule(reading.device_id, reading.key).key_id

    def refusal(self, reading: wire.Reading, topic_device: str | None) -> Refusal | None:
        """None if the reading may be stored; DUPLICATE if it is stored already; else why not."""
        device = reading.device_id
        if topic_device is not None and topic_device != device:
            return Refusal("wrong_topic", f"published on the topic of {topic_device!r} but signed by {device!r}")
        if reading.time is not None and reading.time < TIME_FLOOR:
            return Refusal("time_before_floor", f"reading time {reading.time} is before {TIME_FLOOR} "
                                                "(2024-01-01): the node's clock was set wrong")
        if self.ahead(reading) and self.clock.synchronized():
            return Refusal("future_time", f"reading time {reading.time} is more than {self.max_future_s} s ahead "
                                          "of the gateway, whose clock is synchronized: the node's clock is wrong")
        space = device
        several_keys = False
        if self.registry is not None:
            registry = self.registry()
            rule = registry.key_rule(device, reading.key)
            if rule.status != "active":
                learnt = self.bounds.below(device, rule.key_id) if self.bounds is not None else None
                refused = rule.refusal(reading.seq, reading.time, learnt)
                if refused is not None:
                    return Refusal(*refused)
            space = device + " " + rule.key_id
            several_keys = len(registry.devices[device].keys) > 1
        state = self.state(space, device)
        last = state.last if state is not None else None
        if state is not None and not state.open(reading.seq):
            if self.stored_message(device, reading.seq) == reading.message:
                return DUPLICATE  # sent again after a reboot or a lost ack: we have it
            return Refusal("replayed", f"sequence number {reading.seq} of {device!r} was accepted before, or lies "
                                       f"more than {REPLAY_WINDOW} below the last accepted one ({last})")
        if reading.seq - (last or 0) > MAX_SEQ_JUMP:
            return Refusal("seq_jump", f"sequence number {reading.seq} of {device!r} is more than 2**32 above the "
                                       f"last accepted one of its key ({last or 0})")
        if several_keys and self.stored_message(device, reading.seq) is not None:
            # each key counts on its own, but a device's readings are one series: another key signed this number
            return Refusal("conflicting_reading", f"sequence number {reading.seq} of {device!r} is taken by a "
                                                  "reading another of its keys signed; the first is kept")
        return None

    def ahead(self, reading: wire.Reading) -> bool:
        """Whether the reading is timed more than ``max_future_s`` ahead of the gateway's clock."""
        return reading.time is not None and reading.time > self.clock.now() + self.max_future_s

    def clock_flag(self, reading: wire.Reading) -> str | None:
        """For a reading ``refusal`` let through: CLOCK_UNSYNCED when it is ahead of the gateway's clock
        (which was then not known to be synchronized), else None."""
        return CLOCK_UNSYNCED if self.ahead(reading) else None

    def state(self, space: str, device: str) -> SeqState | None:
        """The replay window of a sequence space; None before its first reading."""
        state = self.spaces.get(space)
        if state is None:
            state = self.stored_state(space)
            if state is None and space != device:
                state = self.stored_state(device)  # a store from before sequence spaces per key
            if state is not None:
                self.spaces[space] = state
        return state

    def stored(self, reading: wire.Reading, space: str) -> SeqState:
        """Notes a reading stored in the open transaction, in its sequence space (``space``); returns the
        space's window, for the store to keep with the commit."""
        state = self.state(space, reading.device_id)
        state = SeqState.first(reading.seq) if state is None else state.taking(reading.seq)
        self.spaces[space] = state
        if self.bounds is not None and reading.key == 0 and reading.device_id not in self.bounds.done:
            registry = self.registry()
            if registry.key_rule(reading.device_id, 0).status == "active":
                self.bounds.learn(reading.device_id, registry.retired_ids(reading.device_id), reading.seq)
        return state


class KeyBounds:
    """The boundaries learnt from the first reading under a device's active key: its older keys are valid
    only below it. Kept in a table of the store (``key_bounds``), cached here."""

    def __init__(self, load: Callable[[], dict[tuple[str, str], int]], save: Callable[[str, str, int], None]):
        self.known = load()
        self.save = save
        self.done: set[str] = set()  # devices whose non-active keys all have a boundary (as of the last look)

    def below(self, device: str, key_id: str) -> int | None:
        return self.known.get((device, key_id))

    def learn(self, device: str, key_ids: list[str], seq: int) -> None:
        if device in self.done:
            return
        for key_id in key_ids:
            if (device, key_id) not in self.known:
                self.known[device, key_id] = seq
                self.save(device, key_id, seq)
        self.done.add(device)

    def forget_done(self) -> None:
        """After a registry change: a device may have a newly retired key."""
        self.done.clear()


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
