"""`govedge gateway run`: the gateway's stages, wired one way through, and the loop that drives them.

ingest (MQTT, manual acks) -> admit (crash guard, fair share per sender) ->
verify (signatures in worker processes; then topic, clock and replay in arrival
order, govedge.gateway.admit) -> store (SQLite, committed before the broker gets
its PUBACK; the quota, govedge.gateway.quota) -> batch (RFC 9162 root, gateway
signature; epochs, govedge.gateway.batcher) -> uplink (MQTT QoS 1 to the hub,
cursor advanced on the hub's confirmation, govedge.gateway.uplink).
A bad message is quarantined with its reason and acknowledged: it never blocks
what comes after it and is never retried forever. The one exception is a
message refused only because the registry does not know its device
(``unknown_device``): it waits in the store (``waiting_for_registry``, bounded
per sender and in total) and is verified again each time the registry is
reloaded (SIGHUP, or a change of the file noticed within a couple of seconds). Whatever handling one
message raises quarantines that message alone (``internal_error``); whatever
ends the process while it handles messages is caught by the crash guard
(govedge.core.crashguard) on the next start.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Callable

from govedge.core import topics, wire
from govedge.core.crashguard import POISON, SUSPECT, CrashGuard, digest
from govedge.core.errors import GovedgeError, internal_error, one_line, text_of
from govedge.core.verifypool import RELOAD_ERRORS, FileWatch, Result, Verifier, check, reload_error

from .admit import DUPLICATE, Checks, FairShare, KeyBounds, Refusal, admit, sender_of
from .aggregate import Aggregator, NotAggregated
from .batcher import Batcher
from .clocksync import GatewayClock
from .config import GatewayConfig
from .filter import Filter
from .health import LiveState
from .ingest import Inbound, MqttIngest
from .quota import Quota
from .room import Undo, disk_fault
from .serial_ingest import SerialIngest
from .store import Store
from .supervise import fault
from .uplink import HubUplink

log = logging.getLogger("govedge.gateway")

MAX_REASON_CHARS = 400  # a quarantine reason is one line a technician reads
# messages of devices the registry does not know yet, kept until a reload (beyond: quarantined as
# unknown_device): a node's full flash buffer per sender, 4096 messages (8 MB at most) in all
WAITING_PER_SENDER = 256
WAITING_TOTAL = 4096
RELOAD_CHECK_S = 2.0  # how often the registry file is looked at
HOUSEKEEPING_S = 2.0  # how often the quota, the quarantine's budget and the epoch clock run
NODE_ACK_S = 0.25  # nodes' acknowledgements are gathered this long (a node waits ack_timeout_s, 30 s by default)
CLOCK_WARNING_S = 60.0  # flagged readings come in streams until NTP syncs: one log line a minute, all counted


class MetricsPortError(GovedgeError, OSError):
    """The Prometheus endpoint's port ([metrics] port) cannot be served: another process holds it."""

    code = "metrics_port"


def _sequence_number(payload: bytes, checked: Result | None, device: str) -> int | None:
    """The sequence number a committed message from ``device``'s topic carries, if it names that device:
    verified, or (a message refused before or without a signature check: it is kept in the quarantine or
    waits for the registry, committed all the same) as it says of itself. None when it says nothing."""
    reading = checked if isinstance(checked, wire.Reading) else None
    if reading is None:
        try:
            reading = wire.decode_unverified(payload)
        except Exception:  # noqa: BLE001 - not a reading at all: nothing to tell its sender
            return None
    return reading.seq if reading.device_id == device else None


class Gateway:
    """The stages wired together. The main loop (``run``) takes messages through admit, verify and store
    (``drain``), then hands over to the batcher and, every two seconds, to the quota; the uplink and the
    anchor stage run in threads of their own and read what they send from the store."""

    def __init__(self, cfg: GatewayConfig, anchor_backend=None, clock: GatewayClock | None = None):
        """``anchor_backend``: a govedge.anchor backend to use instead of the configured one
        (the demo's in-process chain); ``clock``: the gateway's clock instead of the system's as
        ``[verify] clock_synchronized`` says (tests: a clock a day behind)."""
        self.cfg = cfg
        self.counters: Counter = Counter()
        self.db_path = cfg.data_dir / "gateway.db"
        self.store = Store(self.db_path, cfg.synchronous)
        self.verifier = Verifier(cfg.registry, cfg.verify_workers)
        self.live = LiveState(cfg.data_dir, cfg.gateway_id, cfg.verify_workers)
        # chunks being verified, in order, with the SHA-256 digests of their messages (the crash guard's journal)
        self.in_flight: deque[tuple[list[Inbound], Future, bytes]] = deque()
        self.guard = CrashGuard(cfg.data_dir / "handling")
        self.share = FairShare(cfg.device_burst, cfg.device_rate_per_s)
        self.clock = clock or GatewayClock(cfg.clock_synchronized)
        self.last_clock_warning = -CLOCK_WARNING_S
        self.checks = Checks(cfg.max_future_s, self.store.seq_state, self.store.message_of,
                             lambda: self.verifier.registry,
                             KeyBounds(self.store.key_bounds, self.store.learn_key_bound), self.clock)
        key = cfg.signing_key()
        self.inbox: "queue.Queue[Inbound]" = queue.Queue()
        self.ingest = MqttIngest(cfg.ingest, self.inbox, self.counters,
                                 lambda state, ok, failure=None: self.live.set("ingest", state, ok, failure))
        self.serial = [SerialIngest(p, cfg.serial_baud, self.inbox, self.counters,
                                    on_state=lambda state, ok, n=n: self.live.set(f"serial {n}", state, ok))
                       for n, p in enumerate(cfg.serial_ports, 1)]
        self.filter = Filter(cfg.filter)
        self.aggregator = Aggregator.from_config(cfg.aggregate)
        uplink_wake = threading.Event()
        from .heartbeat import Heartbeats

        self.heartbeats = Heartbeats(cfg, key, self.store, self.clock,
                                     lambda: self.room.cause is not None or self.quota.refusing)
        self.uplink = HubUplink(cfg, self.db_path, self.counters, uplink_wake, key,
                                lambda state, ok, failure=None: self.live.set("uplink", state, ok, failure),
                                self.heartbeats)
        from .anchoring import Anchorer, make_backend

        backend = anchor_backend or make_backend(cfg)
        self.anchorer = None if backend is None else Anchorer(
            self.db_path, backend, self.counters, cfg.synchronous, lambda state, ok: self.live.set("anchor", state, ok))
        self.batcher = Batcher(cfg, self.store, key, self.counters, on_batch=uplink_wake.set,
                               on_epoch=(lambda: None) if self.anchorer is None else self.anchorer.wake.set)
        self.quota = Quota(cfg, self.store, self.counters, HubUplink.DESTINATION,
                           lambda state, ok: self.live.set("store", state, ok))
        self.room = self.quota.room  # a full disk: nothing taken, nothing acknowledged (govedge.gateway.room)
        self.retry: deque[Inbound] = deque()  # taken, then put back by a pass a full disk stopped
        self.stopping = threading.Event()
        self.node_acks: dict[str, list[int]] = {}  # committed, not yet told: device -> sequence numbers
        self.node_acks_due = 0.0
        self.last_housekeeping = 0.0
        self.housekeeping_failed = False
        self.registry_watch = FileWatch(cfg.registry)
        self.reload_requested = threading.Event()  # SIGHUP
        self.last_registry_look = time.monotonic()
        self.metrics_server = None  # the Prometheus endpoint's HTTP server, while it runs (govedge.gateway.metrics)

    # -- verify and store ------------------------------------------------------------

    def accept(self, item: Inbound, checked: Result) -> None:
        """One verified message, inside the caller's transaction: stored, quarantined or dropped as a repeat.

        Whatever handling it raises stays with this message. Up to and including its one write
        (a reading row or a quarantine row: one statement, so a failure leaves nothing half-done
        and no savepoint is needed) the message is quarantined as internal_error. After it, in the
        filters and the aggregation, the signed reading stays stored and is batched; the fault is
        logged and counted (condense_faults)."""
        try:
            stored = self._check_and_store(item, checked)
        except Exception as exc:  # noqa: BLE001 - a fault of ours on one message is that message's alone
            if disk_fault(exc):
                raise  # the disk's, not the message's: the whole commit waits for room
            log.error("internal error while handling a message from %s; quarantined", item.source, exc_info=exc)
            self._quarantine(item, None if isinstance(checked, tuple) else checked.device_id, *internal_error(exc))
            return
        if stored is None:
            return
        reading_id, reading = stored
        try:
            self.condense(reading_id, reading)
        except Exception as exc:  # noqa: BLE001 - derived data: the signed original is the record
            if disk_fault(exc):
                raise  # the disk's: the whole commit waits for room
            self.counters["condense_faults"] += 1
            log.error("internal error in the filters or aggregation of %s #%d; the reading is stored and batched, "
                      "its values are not condensed", reading.device_id, reading.seq, exc_info=exc)

    def _check_and_store(self, item: Inbound, checked: Result) -> tuple[int, wire.Reading] | None:
        """The message's checks (govedge.gateway.admit) and its one write; (row id, reading) of a reading
        to condense."""
        topic_device = topics.device_of(item.source)
        if isinstance(checked, tuple):
            if checked[0] == "unknown_device" and self._wait_for_registry(item):
                return None
            self._quarantine(item, topic_device, *checked)
            return None
        reading = checked
        refusal = self.checks.refusal(reading, topic_device)
        if refusal is not None:
            if refusal is DUPLICATE:
                self.counters["duplicates"] += 1
            else:
                self._quarantine(item, reading.device_id, *refusal)
            return None
        kind = "status" if item.source.endswith("/status") else "reading"
        space = self.checks.space(reading)
        flag = self.checks.clock_flag(reading)
        reading_id = self.store.add_reading(reading.device_id, reading.seq, kind, reading.time, reading.message,
                                            space, flag)
        self.store.note_window(space, self.checks.stored(reading, space))
        if flag is not None:
            self._flagged(reading, flag)
        self.batcher.waiting += 1
        self.counters["verified"] += 1
        return (reading_id, reading) if kind == "reading" else None

    def condense(self, reading_id: int, reading: wire.Reading) -> None:
        """Filter and aggregate: the signed original is stored and batched whatever they decide."""
        decision = self.filter.process(reading)
        for held in decision.held:  # kept for audit, counted per rule
            self.store.hold_back(reading_id, held.measurement.name, held.rule, held.reason)
            self.counters[f"held_back_{held.rule}"] += 1
        closed = self.batcher.aggregates  # the windows the aggregation closes go to the next batch
        for m in decision.passed:
            try:
                closed.extend(self.aggregator.add(reading.device_id, reading.time, reading.seq,
                                                  m.name, m.unit, m.value))
            except NotAggregated as exc:
                self.counters[f"not_aggregated_{exc.code}"] += 1

    def _flagged(self, reading: wire.Reading, flag: str) -> None:
        """A reading stored with a clock flag: counted, and told in the log once a minute."""
        self.counters[flag] += 1
        if time.monotonic() - self.last_clock_warning >= CLOCK_WARNING_S:
            self.last_clock_warning = time.monotonic()
            log.warning("%s: %s #%d is timed %.0f s ahead of the gateway's clock, which is not known to be "
                        "synchronized; stored, batched and flagged (%d so far)", flag, reading.device_id,
                        reading.seq, reading.time - self.clock.now(), self.counters[flag])

    def _quarantine(self, item: Inbound, device: str | None, code: str, reason: str) -> None:
        reason = one_line(reason, MAX_REASON_CHARS)  # a reason quotes what came in: a topic may be 64 KiB long
        self.quota.quarantined_bytes += self.store.quarantine(item.source, device, code, reason, item.payload,
                                                              sender_of(item.source))
        self.counters["quarantined"] += 1
        self.counters[f"quarantined_{code}"] += 1
        log.warning("quarantine: %s from %s: %s", code, item.source, reason)

    def _wait_for_registry(self, item: Inbound) -> bool:
        """Keeps a message of a device the registry does not know (yet) for the next reload; False (quarantine
        it) when its sender or the table is at its bound."""
        if self.store.wait_for_registry(item.source, sender_of(item.source), item.payload, WAITING_PER_SENDER,
                                        WAITING_TOTAL):
            self.counters["waiting_for_registry"] += 1
            return True
        self.counters["waiting_for_registry_full"] += 1
        return False

    # -- registry reloads ------------------------------------------------------------

    def maybe_reload(self, force: bool = False) -> bool:
        """Reloads the registry when its file changed (or ``force``: SIGHUP); then verifies the messages
        waiting for it again. A file that does not load leaves the registry before in force (one log line)."""
        changed = self.registry_watch.changed()
        if not (changed or force):
            return False
        self.finish_in_flight()  # what is in hand was checked against the registry before
        try:
            registry = self.verifier.reload()
        except RELOAD_ERRORS as exc:
            self.counters["registry_reload_failures"] += 1
            log.error("registry not reloaded, the one loaded before stays in force: %s",
                      reload_error(self.cfg.registry, exc))
            return False
        if self.checks.bounds is not None:
            self.checks.bounds.forget_done()  # a device may have a newly retired key
        self.counters["registry_reloads"] += 1
        log.info("registry %s reloaded: %d devices", self.cfg.registry, len(registry.devices))
        self.verify_waiting()
        return True

    def verify_waiting(self) -> int:
        """Verifies the messages waiting for the registry again, oldest first; those whose device it knows now
        are stored or quarantined as any other. Returns how many left the table."""
        rows = self.store.waiting_for_registry()
        if not rows:
            return 0
        normal = [r for r in rows if self.guard.verdict(r[2]) is None]
        done = 0
        with self.guard.handling(m for _, _, m in normal):
            results = check([m for _, _, m in normal], self.verifier.registry)
            with self.store:
                for (row_id, source, message), checked in zip(normal, results):
                    if isinstance(checked, tuple) and checked[0] == "unknown_device":
                        continue
                    self.store.done_waiting(row_id)
                    self.accept(Inbound(source, message, lambda: None), checked)
                    done += 1
        for row_id, source, message in rows:  # a message the process died on: alone, or refused
            verdict = self.guard.verdict(message)
            if verdict is None:
                continue
            item = Inbound(source, message, lambda: None)
            with self.guard.handling([message], alone=True), self.store:
                self.store.done_waiting(row_id)
                if verdict == POISON:
                    self._quarantine(item, topics.device_of(source), "internal_error", self.guard.poison_note(message))
                else:
                    self.accept(item, check([message], self.verifier.registry)[0])
            self.guard.handled([message])
            done += 1
        if done:
            log.info("registry: %d of %d messages waiting for it verified again", done, len(rows))
        return done

    def replay_quarantined(self, code: str) -> tuple[int, int]:
        """Verifies the messages quarantined whole with ``code`` again (``govedge gateway replay-quarantine``:
        ``future_time`` after a node's clock, or the gateway's, was put right) and stores those every check
        passes now; the others keep their quarantine row as it was. Returns (stored, left)."""
        rows = self.store.quarantined_whole(code)
        results = check([m for _, _, m in rows], self.verifier.registry)
        stored = 0
        with self.store:
            for (row_id, source, message), checked in zip(rows, results):
                if isinstance(checked, tuple) or self.checks.refusal(checked, topics.device_of(source)) is not None:
                    continue  # still refused (or a duplicate of what is stored): its row stays, with its reason
                self.store.forget_quarantined(row_id)
                self.accept(Inbound(source, message, lambda: None), checked)
                stored += 1
        if stored:
            log.info("quarantine: %d of %d %s messages verified again and stored", stored, len(rows), code)
        return stored, len(rows) - stored

    CHUNK = 256  # messages per trip to a verification worker
    TAKE = 2000  # messages taken from the inbox at a time

    def drain(self, max_wait_s: float) -> int:
        """Take what has arrived into verification; commit the verified chunks, oldest first, then ack them.

        Returns the number of messages committed. While the workers check one chunk
        the main loop stores the one before, so both cores are busy under load.
        """
        if self.room.refusing():  # the disk is (nearly) full: room first; nothing is taken or committed
            self.quota.make_room()
            time.sleep(max_wait_s)
            return 0
        if self.quota.refusing:  # unacknowledged, the messages wait in the broker and in the nodes' buffers
            time.sleep(max_wait_s)
            return 0
        taken = self._take(0.0 if self.in_flight else max_wait_s)
        if taken and self.room.refusing():  # the disk filled while they came: back, unacknowledged
            self.retry.extendleft(reversed(taken))
            return 0
        done = 0
        items, refused = admit(taken, self.guard, self.share)
        waiting = taken  # what goes back if a full disk stops this pass before it is in hand
        try:
            if refused:
                done += self._refuse(refused)
            while items:
                normal, suspect, items = self._until_suspect(items)
                waiting = normal + ([suspect] if suspect is not None else []) + items
                self._submit(normal)
                waiting = waiting[len(normal):]
                if suspect is not None:  # handled alone, after everything before it, in order
                    done += self.finish_in_flight()
                    done += self._handle_alone(suspect)
                    waiting = items
            waiting = []
            if self.quota.quarantine_due():
                self.quota.keep_quarantine_within_budget()
            return done + self._commit_verified(wait=not taken)
        except Exception as exc:
            if not disk_fault(exc):
                raise
            self.retry.extendleft(reversed(waiting))
            self._disk_full(exc)
            return done

    def _disk_full(self, exc: BaseException) -> None:
        """A commit failed for want of room: rolled back (what it held is back in hand, unacknowledged),
        told (govedge.gateway.room), and room is made before the next attempt."""
        self.store.rollback()
        self.room.failed(exc)
        self.quota.make_room()

    def _refuse(self, refused: list[tuple[Inbound, Refusal]]) -> int:
        with self.store:
            for item, refusal in refused:
                self._quarantine(item, topics.device_of(item.source), *refusal)
        self._acknowledge((item, None) for item, _ in refused)
        return len(refused)

    def _acknowledge(self, committed) -> None:
        """Tells the senders of committed messages (``committed``: (Inbound, its Result or None)) that they may
        forget them: the broker's PUBACK (or the serial answer) now; to each node on MQTT the sequence
        numbers of its messages, gathered with those of the commits before and sent by send_node_acks
        (docs/FORMAT.md, "Acknowledgements between node and gateway"). Each number is named: a node whose messages a broker lost (it had no session for the
        gateway after a power cut) must not take a later number for them."""
        seqs = self.node_acks
        for item, checked in committed:
            item.ack()
            device = topics.device_of(item.source)
            if device is None:  # a serial line: its answer named the message
                continue
            seq = _sequence_number(item.payload, checked, device)
            if seq is not None:
                seqs.setdefault(device, []).append(seq)
        self.send_node_acks()

    def send_node_acks(self, now: bool = False) -> None:
        """Publishes the nodes' acknowledgements gathered since the last time, once NODE_ACK_S passed (``now``:
        whatever waits). A publish costs this process about 40 µs: under a backlog, one per node every
        NODE_ACK_S instead of one per node and commit (see docs/BENCHMARKS.md)."""
        if self.node_acks and (now or time.monotonic() >= self.node_acks_due):
            acks, self.node_acks = self.node_acks, {}
            self.node_acks_due = time.monotonic() + NODE_ACK_S
            self.ingest.confirm(acks)

    def _until_suspect(self, items: list[Inbound]) -> tuple[list[Inbound], Inbound | None, list[Inbound]]:
        """(the messages before the first suspect, the suspect, the rest)."""
        if not self.guard.entries:
            return items, None, []
        for i, item in enumerate(items):
            if self.guard.verdict(item.payload) == SUSPECT:
                return items[:i], item, items[i + 1:]
        return items, None, []

    def _submit(self, items: list[Inbound]) -> None:
        if not items:
            return
        size = max(1, min(self.CHUNK, -(-len(items) // max(1, self.verifier.workers))))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        digests = [b"".join(digest(m.payload) for m in chunk) for chunk in chunks]
        # noted before the first check: with no worker processes, submit checks in this process
        self.guard.note(b"".join(d for _, _, d in self.in_flight) + b"".join(digests))
        for chunk, d in zip(chunks, digests):
            self.in_flight.append((chunk, self.verifier.submit([m.payload for m in chunk]), d))

    def _handle_alone(self, item: Inbound) -> int:
        """A message the process was handling when it died: checked and stored with nothing else in hand."""
        with self.guard.handling([item.payload], alone=True):
            checked = check([item.payload], self.verifier.registry)[0]
            with self.store:
                self.accept(item, checked)
            self._acknowledge([(item, checked)])
        self.guard.handled([item.payload])
        return 1

    def _commit_verified(self, wait: bool) -> int:
        """Commit the chunks whose verification is done, oldest first; then acknowledge them.

        ``wait``: wait for the oldest chunk (nothing new came in). Too many chunks in
        flight are waited for as well, so that memory stays bounded.
        """
        limit = 4 * max(1, self.verifier.workers)
        ready: list[tuple[list[Inbound], list[Result]]] = []
        popped = []
        while self.in_flight and (wait or self.in_flight[0][1].done() or len(self.in_flight) > limit):
            popped.append(self.in_flight.popleft())
            chunk, future, _ = popped[-1]
            ready.append((chunk, self.verifier.result([m.payload for m in chunk], future)))
            wait = False
        if not ready:
            return 0
        undo = Undo(self)
        try:
            with self.store:
                for chunk, results in ready:
                    for item, checked in zip(chunk, results):
                        self.accept(item, checked)
        except Exception as exc:
            if disk_fault(exc):  # nothing of it is stored: back in hand, oldest first, unacknowledged
                undo.restore()
                self.in_flight.extendleft(reversed(popped))
            raise
        self.room.committed()
        # committed: now the senders may forget them
        self._acknowledge((item, checked) for chunk, results in ready for item, checked in zip(chunk, results))
        n = sum(len(chunk) for chunk, _ in ready)
        if self.in_flight:  # the journal names what is still in hand
            self.guard.note(b"".join(d for _, _, d in self.in_flight))
        else:
            self.guard.clear()
        if self.guard.entries:  # suspects committed without a death are suspects no more
            self.guard.handled([item.payload for chunk, _ in ready for item in chunk])
        return n

    def _take(self, max_wait_s: float) -> list[Inbound]:
        if self.retry:  # put back by a pass a full disk stopped: they come first, in their order
            items = list(self.retry)
            self.retry.clear()
            return items
        items: list[Inbound] = []
        try:
            items.append(self.inbox.get(timeout=max_wait_s) if max_wait_s > 0 else self.inbox.get_nowait())
        except queue.Empty:
            return items
        # what arrived meanwhile goes along; waiting for more would stall a broker that
        # sends no more until it has its acknowledgements
        while len(items) < self.TAKE:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def housekeeping(self) -> None:
        """One pass of the quota, the quarantine's budget and the epoch clock. What it raises is logged,
        counted and told as the state of "housekeeping"; the gateway goes on and the next pass comes as
        usual (govedge.gateway.supervise)."""
        try:
            self.quota.keep_quarantine_within_budget()
            self.share.forget_full()
            self.quota.keep_within_quota()
            self.batcher.recount()  # the quota may have dropped some
            self.quota.tell_state()
            self.live.retry()  # a live.json a full disk kept from being written
            self.batcher.maybe_close_epoch()
            self.live.set("clock", *self.clock.state())  # written only when it changes
            if self.housekeeping_failed:
                self.housekeeping_failed = False
                self.live.set("housekeeping", "passes run again", True)
        except Exception as exc:  # noqa: BLE001 - whatever nobody foresaw: the next pass tries again
            self.store.rollback()
            if disk_fault(exc):  # foreseen: the store's state tells it (govedge.gateway.room)
                self.quota.make_room()
                return
            self.housekeeping_failed = True
            line = fault(self.counters, "housekeeping", exc, f"the next pass in {HOUSEKEEPING_S:g} s")
            try:
                self.live.set("housekeeping", f"the last pass failed ({line}); the next in {HOUSEKEEPING_S:g} s",
                              False)
            except Exception as exc2:  # noqa: BLE001 - telling it may fail as well (a full disk)
                log.error("housekeeping: its state could not be told: %s", text_of(exc2))
        finally:
            self.last_housekeeping = time.monotonic()

    def finish_in_flight(self) -> int:
        n = 0
        while self.in_flight:
            n += self._commit_verified(wait=True)
        return n

    # -- the service -----------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> None:
        if self.cfg.metrics_port:
            from .metrics import serve

            try:
                self.metrics_server, _ = serve(self, self.cfg.metrics_port)
            except OSError as exc:  # a busy port: one line and exit 2 (main()), not a traceback and a restart loop
                port = self.cfg.metrics_port
                raise MetricsPortError(
                    f"[metrics] port {port}: 127.0.0.1:{port} cannot be served: {exc.strerror or exc} (stop the "
                    f"process that holds it, ss -ltnp 'sport = :{port}' names it, or give [metrics] port another "
                    "number)") from None
        self.quota.tell_state()
        self.uplink.start()
        if self.anchorer is not None:
            self.anchorer.start()
        self.ingest.start()
        for port in self.serial:
            port.start()
        log.info("gateway %s running: ingest %s:%d, hub %s:%d", self.cfg.gateway_id, self.cfg.ingest.host,
                 self.cfg.ingest.port, self.cfg.hub.host, self.cfg.hub.port)
        batcher = self.batcher
        hup = None
        if threading.current_thread() is threading.main_thread():  # SIGHUP: reload the registry
            hup = signal.signal(signal.SIGHUP, lambda *a: self.reload_requested.set())
        try:
            try:
                self.verify_waiting()  # the registry may have changed while the gateway was stopped
            except Exception as exc:
                if not disk_fault(exc):
                    raise
                self.store.rollback()  # they wait in the store for the next reload
            while not self.stopping.is_set() and not (until and until()):
                self.drain(0.2)
                self.send_node_acks()
                try:
                    if self.reload_requested.is_set() or time.monotonic() - self.last_registry_look > RELOAD_CHECK_S:
                        force = self.reload_requested.is_set()
                        self.reload_requested.clear()
                        self.maybe_reload(force)
                        self.last_registry_look = time.monotonic()
                    while batcher.maybe_batch() is not None:
                        pass  # a backlog goes out in as many full batches as it makes
                    if time.monotonic() - self.last_housekeeping > HOUSEKEEPING_S:
                        self.housekeeping()
                    batcher.close_if_requested()
                except Exception as exc:
                    if not disk_fault(exc):
                        raise
                    self.store.rollback()  # nothing acknowledged hangs on these: the next pass tries again
                    self.quota.make_room()
            try:
                self.finish_in_flight()
            except Exception as exc:
                if not disk_fault(exc):
                    raise
                log.error("store: %d messages not committed for want of room (%s); the broker delivers them "
                          "again at the next start", sum(len(c) for c, _, _ in self.in_flight), text_of(exc))
                self.in_flight.clear()
            batcher.aggregates.extend(self.aggregator.flush())
            try:
                batcher.maybe_batch(force=True)
                batcher.maybe_close_epoch(force=True)  # what was made is anchored, even if the epoch is short
            except Exception as exc:
                if not disk_fault(exc):
                    raise
                self.store.rollback()
                log.error("store: the last batch and epoch not made for want of room (%s); the next start "
                          "makes them", text_of(exc))
            if self.anchorer is not None:  # a few seconds for the chain to take it; else at the next start
                self.anchorer.wake.set()
                deadline = time.monotonic() + 5
                while self.store.epochs_to_anchor(1) and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            if hup is not None:
                signal.signal(signal.SIGHUP, hup)
            if self.anchorer is not None:
                self.anchorer.stop()
                self.anchorer.join(10)
            self.verifier.close()
            for port in self.serial:
                port.stop()
            self.send_node_acks(now=True)  # committed: the nodes need not send these again
            self.ingest.stop()
            self.uplink.stop()
            self.uplink.join(5)
            self.store.close()
            self.guard.close()
            self.live.remove()
            if self.metrics_server is not None:  # the port is free again for the next start in this process
                self.metrics_server.shutdown()
                self.metrics_server.server_close()

    def stop(self) -> None:
        self.stopping.set()
