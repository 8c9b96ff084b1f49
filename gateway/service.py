"""`govedge gateway run`: the gateway's stages, one way through.

ingest (MQTT, manual acks) -> admit (crash guard, fair share per sender) ->
verify (signatures in worker processes; then replay and clock in arrival
order) -> store (SQLite, committed before the broker gets its PUBACK) -> batch
(RFC 9162 root, gateway signature) -> uplink (MQTT QoS 1 to the hub, cursor
advanced on PUBACK).
A bad message is quarantined with its reason and acknowledged: it never blocks
what comes after it and is never retried forever. Whatever handling one
message raises quarantines that message alone (``internal_error``); whatever
ends the process while it handles messages is caught by the crash guard
(govedge.core.crashguard) on the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Callable

import cbor2

from govedge.anchor import Receipt
from govedge.core import batch, mqtt, proof, topics, wire
from govedge.core.crashguard import POISON, SUSPECT, CrashGuard, digest
from govedge.core.errors import internal_error, one_line
from govedge.core.verifypool import Result, Verifier, check

from .admit import FairShare, sender_of
from .aggregate import Aggregator, NotAggregated
from .config import GatewayConfig
from .filter import Filter
from .health import LiveState
from .ingest import Inbound, MqttIngest
from .serial_ingest import SerialIngest
from .store import Store

log = logging.getLogger("govedge.gateway")

MAX_REASON_CHARS = 400  # a quarantine reason is one line a technician reads


class HubUplink(threading.Thread):
    """Sends batches after the hub's cursor, oldest first, QoS 1; the cursor moves on PUBACK."""

    DESTINATION = "hub"
    EPOCHS = "hub-epochs"

    def __init__(self, cfg: GatewayConfig, db_path, counters: Counter, wake: threading.Event, key=None,
                 on_state: Callable[[str, bool], None] = lambda state, ok: None):
        super().__init__(name="uplink", daemon=True)
        self.on_state = on_state
        self.key = key  # signs the epoch records
        self.epoch_topic = (cfg.hub_topic[:-len("batch")] + "epoch" if cfg.hub_topic.endswith("/batch")
                            else topics.epoch(cfg.gateway_id))
        self.cfg = cfg
        self.db_path = db_path
        self.counters = counters
        self.wake = wake
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.state = "starting"
        self.client = mqtt.client(cfg.hub, clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason, properties):
        hub = f"{self.cfg.hub.host}:{self.cfg.hub.port}"
        if reason.is_failure:
            self.state = f"refused by hub broker: {reason}"
            log.error("uplink: the hub broker %s refused the connection: %s", hub, reason)
            self.on_state(f"refused by the hub broker {hub}: {reason} (check [hub] user, password, "
                          "certificates)", False)
            return
        self.state = "connected"
        self.connected.set()
        log.info("uplink: connected to hub %s", hub)
        self.on_state(f"connected to the hub broker {hub}", True)
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        if self.connected.is_set():
            log.warning("uplink: lost the hub %s:%d (%s)", self.cfg.hub.host, self.cfg.hub.port, reason)
        self.connected.clear()
        self.state = "disconnected"
        self.on_state(f"no connection to the hub broker {self.cfg.hub.host}:{self.cfg.hub.port} ({reason}); "
                      "batches wait on disk, trying again with growing pauses", False)

    def run(self):
        store = Store(self.db_path, self.cfg.synchronous)
        self.on_state(f"connecting to the hub broker {self.cfg.hub.host}:{self.cfg.hub.port}", False)
        self.client.connect_async(self.cfg.hub.host, self.cfg.hub.port, self.cfg.hub.keepalive)
        self.client.loop_start()
        gap = 1.0 / self.cfg.uplink_rate_per_s if self.cfg.uplink_rate_per_s > 0 else 0.0
        try:
            while not self.stopping.is_set():
                if not self.connected.wait(0.5):
                    continue
                pending = store.batches_after(store.cursor(self.DESTINATION), 16)
                if not pending:
                    if not self._send_epochs(store):
                        self.wake.wait(0.5)
                        self.wake.clear()
                    continue
                for seq, cose, _created in pending:
                    if not self._publish(self.cfg.hub_topic, cose):
                        break  # the hub is away; the batch stays after the cursor
                    with store:
                        store.advance(self.DESTINATION, seq)
                    self.counters["batches_delivered"] += 1
                    if gap:
                        time.sleep(gap)  # the backlog after an outage goes out under the rate cap
        finally:
            self.client.loop_stop()
            store.close()

    def _publish(self, topic: str, payload: bytes) -> bool:
        """QoS 1; True once the hub's broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 30
        while not info.is_published() and self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        return info.is_published()

    def _send_epochs(self, store: Store) -> bool:
        """Anchored epochs to the hub, after every batch went; True if any went."""
        sent = False
        for number, first, last, heads, receipt in store.confirmed_epochs_after(store.cursor(self.EPOCHS), 4):
            epoch = proof.Epoch(self.cfg.gateway_id, number, tuple(cbor2.loads(heads)))
            record = proof.sign_epoch(self.key, epoch, first, last, Receipt.loads(receipt))
            if not self._publish(self.epoch_topic, record):
                return sent
            with store:
                store.advance(self.EPOCHS, number)
            self.counters["epochs_delivered"] += 1
            sent = True
        return sent

    def stop(self):
        self.stopping.set()
        self.wake.set()


class Gateway:
    def __init__(self, cfg: GatewayConfig, anchor_backend=None):
        """``anchor_backend``: a govedge.anchor backend to use instead of the configured one
        (the demo's in-process chain)."""
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
        self.quarantined_bytes = 0  # added to the quarantine since its budget was last enforced
        self.key = cfg.signing_key()
        self.inbox: "queue.Queue[Inbound]" = queue.Queue()
        self.ingest = MqttIngest(cfg.ingest, self.inbox, self.counters,
                                 lambda state, ok: self.live.set("ingest", state, ok))


        self.serial = [SerialIngest(p, cfg.serial_baud, self.inbox, self.counters,
                                    on_state=lambda state, ok, n=n: self.live.set(f"serial {n}", state, ok))
                       for n, p in enumerate(cfg.serial_ports, 1)]
        self.uplink_wake = threading.Event()
        self.uplink = HubUplink(cfg, self.db_path, self.counters, self.uplink_wake, self.key,
                                lambda state, ok: self.live.set("uplink", state, ok))
        from .anchoring import Anchorer, make_backend

        backend = anchor_backend or make_backend(cfg)
        self.epoch_close_requested = threading.Event()
        self.anchorer = None if backend is None else Anchorer(
            self.db_path, backend, self.counters, cfg.synchronous, lambda state, ok: self.live.set("anchor", state, ok))
        self.last_seq: dict[str, int] = {}
        self.filter = Filter(cfg.filter)
        self.aggregator = Aggregator.from_config(cfg.aggregate)
        self.aggregates: list = []  # closed windows waiting for the next batch
        self.stopping = threading.Event()
        self.last_batch_at = time.monotonic()
        self.last_housekeeping = 0.0
        self.refusing = False  # the store is full and the policy is refuse_new
        self.waiting = self.store.count_unbatched()  # readings stored but not yet in a batch

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
            log.error("internal error while handling a message from %s; quarantined", item.source, exc_info=exc)
            self._quarantine(item, None if isinstance(checked, tuple) else checked.device_id, *internal_error(exc))
            return
        if stored is None:
            return
        reading_id, reading = stored
        try:
            self.condense(reading_id, reading)
        except Exception as exc:  # noqa: BLE001 - derived data: the signed original is the record
            self.counters["condense_faults"] += 1
            log.error("internal error in the filters or aggregation of %s #%d; the reading is stored and batched, "
                      "its values are not condensed", reading.device_id, reading.seq, exc_info=exc)

    def _check_and_store(self, item: Inbound, checked: Result) -> tuple[int, wire.Reading] | None:
        """The message's checks and its one write; (row id, reading) of a reading to condense."""
        topic_device = topics.device_of(item.source)
        kind = "status" if item.source.endswith("/status") else "reading"
        if isinstance(checked, tuple):
            self._quarantine(item, topic_device, *checked)
            return None
        reading = checked
        if topic_device is not None and topic_device != reading.device_id:
            self._quarantine(item, reading.device_id, "wrong_topic",
                             f"published on the topic of {topic_device!r} but signed by {reading.device_id!r}")
            return None
        if reading.time is not None and reading.time > time.time() + self.cfg.max_future_s:
            self._quarantine(item, reading.device_id, "future_time",
                             f"reading time {reading.time} is more than {self.cfg.max_future_s} s ahead of the gateway")
            return None
        last = self.last_seq.get(reading.device_id)
        if last is None:
            last = self.store.last_seq(reading.device_id)
        if last is not None and reading.seq <= last:
            if self.store.message_of(reading.device_id, reading.seq) == reading.message:
                self.counters["duplicates"] += 1  # sent again after a reboot or a lost ack: we have it
                return None
            self._quarantine(item, reading.device_id, "replayed",
                             f"sequence number {reading.seq} of {reading.device_id!r} is not above the last "
                             f"accepted one ({last})")
            return None
        reading_id = self.store.add_reading(reading.device_id, reading.seq, kind, reading.time, reading.message)
        self.last_seq[reading.device_id] = reading.seq
        self.waiting += 1
        self.counters["verified"] += 1
        return (reading_id, reading) if kind == "reading" else None

    def condense(self, reading_id: int, reading: wire.Reading) -> None:
        """Filter and aggregate: the signed original is stored and batched whatever they decide."""
        decision = self.filter.process(reading)
        for held in decision.held:  # kept for audit, counted per rule
            self.store.hold_back(reading_id, held.measurement.name, held.rule, held.reason)
            self.counters[f"held_back_{held.rule}"] += 1
        for m in decision.passed:
            try:
                self.aggregates.extend(self.aggregator.add(reading.device_id, reading.time, reading.seq,
                                                           m.name, m.unit, m.value))
            except NotAggregated as exc:
                self.counters[f"not_aggregated_{exc.code}"] += 1

    def _quarantine(self, item: Inbound, device: str | None, code: str, reason: str) -> None:
        reason = one_line(reason, MAX_REASON_CHARS)  # a reason quotes what came in: a topic may be 64 KiB long
        self.quarantined_bytes += self.store.quarantine(item.source, device, code, reason, item.payload,
                                                        sender_of(item.source))
        self.counters["quarantined"] += 1
        self.counters[f"quarantined_{code}"] += 1
        log.warning("quarantine: %s from %s: %s", code, item.source, reason)

    CHUNK = 256  # messages per trip to a verification worker
    TAKE = 2000  # messages taken from the inbox at a time

    def drain(self, max_wait_s: float) -> int:
        """Take what has arrived into verification; commit the verified chunks, oldest first, then ack them.

        Returns the number of messages committed. While the workers check one chunk
        the main loop stores the one before, so both cores are busy under load.
        """
        if self.refusing:  # unacknowledged, the messages wait in the broker and in the nodes' buffers
            time.sleep(max_wait_s)
            return 0
        taken = self._take(0.0 if self.in_flight else max_wait_s)
        done = 0
        items, refused = self._admit(taken)
        if refused:
            done += self._refuse(refused)
        while items:
            normal, suspect, items = self._until_suspect(items)
            self._submit(normal)
            if suspect is not None:  # handled alone, after everything before it, in order
                done += self.finish_in_flight()
                done += self._handle_alone(suspect)
        if self.quarantined_bytes > self.cfg.quarantine_max_bytes // 8:
            self.keep_quarantine_within_budget()
        return done + self._commit_verified(wait=not taken)

    def _admit(self, items: list[Inbound]) -> tuple[list[Inbound], list[tuple[Inbound, str, str]]]:
        """The admit stage (govedge.gateway.admit): poison and messages over their sender's share are
        refused here, unverified; the rest go on."""
        admitted: list[Inbound] = []
        refused: list[tuple[Inbound, str, str]] = []
        for item in items:
            sender = sender_of(item.source)
            if self.guard.verdict(item.payload) == POISON:
                refused.append((item, "internal_error", self.guard.poison_note(item.payload)))
            elif not self.share.take(sender):
                refused.append((item, "over_share", f"{sender} sent more than its share "
                                                    f"({self.cfg.device_burst} messages at once, "
                                                    f"{self.cfg.device_rate_per_s:g} a second after that)"))
            else:
                admitted.append(item)
        return admitted, refused

    def _refuse(self, refused: list[tuple[Inbound, str, str]]) -> int:
        with self.store:
            for item, code, reason in refused:
                self._quarantine(item, topics.device_of(item.source), code, reason)
        for item, _, _ in refused:
            item.ack()
        return len(refused)

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
            item.ack()
        self.guard.handled([item.payload])
        return 1

    def _commit_verified(self, wait: bool) -> int:
        """Commit the chunks whose verification is done, oldest first; then acknowledge them.

        ``wait``: wait for the oldest chunk (nothing new came in). Too many chunks in
        flight are waited for as well, so that memory stays bounded.
        """
        limit = 4 * max(1, self.verifier.workers)
        ready: list[tuple[list[Inbound], list[Result]]] = []
        while self.in_flight and (wait or self.in_flight[0][1].done() or len(self.in_flight) > limit):
            chunk, future, _ = self.in_flight.popleft()
            ready.append((chunk, self.verifier.result([m.payload for m in chunk], future)))
            wait = False
        if not ready:
            return 0
        with self.store:
            for chunk, results in ready:
                for item, checked in zip(chunk, results):
                    self.accept(item, checked)
        n = 0
        for chunk, _ in ready:  # committed: now the senders may forget them
            for item in chunk:
                item.ack()
            n += len(chunk)
        if self.in_flight:  # the journal names what is still in hand
            self.guard.note(b"".join(d for _, _, d in self.in_flight))
        else:
            self.guard.clear()
        if self.guard.entries:  # suspects committed without a death are suspects no more
            self.guard.handled([item.payload for chunk, _ in ready for item in chunk])
        return n

    def _take(self, max_wait_s: float) -> list[Inbound]:
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

    def finish_in_flight(self) -> int:
        n = 0
        while self.in_flight:
            n += self._commit_verified(wait=True)
        return n

    # -- batches -------------------------------------------------------------------

    def maybe_batch(self, force: bool = False) -> int | None:
        waiting = self.waiting
        due = time.monotonic() - self.last_batch_at >= self.cfg.batch_interval_s
        if not waiting or not (force or due or waiting >= self.cfg.batch_max_readings):
            return None
        rows = self.store.unbatched(self.cfg.batch_max_readings)
        if not rows:
            self.waiting = 0
            return None
        seq = self.store.next_batch_seq()
        aggregates = [a.to_cbor_map() for a in self.aggregates]
        created = int(time.time())
        cose, root = batch.sign(self.key, self.cfg.gateway_id, seq, created,
                                [r.message for r in rows], aggregates, self.cfg.batch_mode)
        head = proof.batch_head(self.cfg.gateway_id, seq, created, self.cfg.batch_mode, len(rows), root)
        with self.store:
            self.store.add_batch(seq, rows, root, cose, head)
        self.aggregates.clear()
        self.waiting -= len(rows)
        self.last_batch_at = time.monotonic()
        self.counters["batches"] += 1
        self.uplink_wake.set()
        log.info("batch %s/%d: %d readings, root %s", self.cfg.gateway_id, seq, len(rows), root.hex()[:16])
        return seq

    # -- epochs ----------------------------------------------------------------------

    def maybe_close_epoch(self, force: bool = False) -> int | None:
        """Close the open epoch (the batches since the last one) once it is epoch_s old; its root is anchored."""
        last = self.store.last_epoch()
        number, first = (0, 0) if last is None else (last[0] + 1, last[1] + 1)
        heads = self.store.batch_heads(first, self.store.next_batch_seq() - 1)
        if not heads or not (force or time.time() - heads[0][2] >= self.cfg.epoch_s):
            return None
        root = proof.epoch_root([h for _, h, _ in heads])
        with self.store:
            self.store.add_epoch(number, first, heads[-1][0], root, [h for _, h, _ in heads])
        self.counters["epochs"] += 1
        if self.anchorer is not None:
            self.anchorer.wake.set()
        log.info("epoch %s/%d: batches %d..%d, root %s", self.cfg.gateway_id, number, first, heads[-1][0],
                 root.hex()[:16])
        return number

    # -- disk quota ------------------------------------------------------------------

    def keep_quarantine_within_budget(self) -> None:
        """The quarantine's own budget (bytes and rows): the sender with the most loses its oldest first."""
        with self.store:
            pruned = self.store.trim_quarantine(self.cfg.quarantine_max_bytes, self.cfg.quarantine_max_rows)
            if pruned:
                self.store.record_drop("quarantine", pruned, f"quarantine over its budget of "
                                       f"{self.cfg.quarantine_max_bytes} bytes or {self.cfg.quarantine_max_rows} rows")
        self.quarantined_bytes = 0
        if pruned:
            self.counters["quarantine_pruned"] += pruned
            log.warning("quarantine: over its budget, the oldest %d rows of the largest senders deleted", pruned)

    def keep_within_quota(self) -> None:
        """Delivered data goes first (by age, then by size); unsent data only by the policy, counted."""
        cfg, store = self.cfg, self.store
        max_age = time.time() - cfg.store_max_age_days * 86400
        with store:
            store.prune_delivered(HubUplink.DESTINATION, max_age, 1000)
            store.forget_held_back(time.time() - cfg.store_held_back_days * 86400)
            if cfg.store_policy == "drop_oldest":
                too_old = store.drop_unsent_older_than(HubUplink.DESTINATION, max_age)
                if too_old:
                    store.record_drop("readings", too_old,
                                      f"unsent for more than {cfg.store_max_age_days} days (policy drop_oldest)")
                    self.counters["dropped"] += too_old
                    log.error("store: dropped %d readings unsent for more than %d days",
                              too_old, cfg.store_max_age_days)
        while store.used_bytes() > cfg.store_max_bytes:
            with store:
                pruned = store.prune_delivered(HubUplink.DESTINATION, time.time(), 50)
            if pruned:
                continue
            if cfg.store_policy == "refuse_new":
                if not self.refusing:
                    log.error("store: %d bytes in use, over the quota of %d; policy refuse_new: not taking "
                              "messages until the hub has caught up", store.used_bytes(), cfg.store_max_bytes)
                self.refusing = True
                return
            with store:
                batches, readings = store.drop_oldest_unsent(HubUplink.DESTINATION, 5)
                if readings or batches:
                    store.record_drop("readings", readings,
                                      f"store over its quota of {cfg.store_max_bytes} bytes (policy drop_oldest)")
            if not (readings or batches):
                break
            self.counters["dropped"] += readings
            log.error("store: over the quota of %d bytes: dropped the %d oldest unsent readings (%d batches)",
                      cfg.store_max_bytes, readings, batches)
        if self.refusing and store.used_bytes() <= cfg.store_max_bytes:
            log.info("store: back under its quota; taking messages again")
            self.refusing = False

    # -- the service -----------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> None:
        if self.cfg.metrics_port:
            from .metrics import serve

            serve(self, self.cfg.metrics_port)
        self._tell_store_state()
        self.uplink.start()
        if self.anchorer is not None:
            self.anchorer.start()
        self.ingest.start()
        for port in self.serial:
            port.start()
        log.info("gateway %s running: ingest %s:%d, hub %s:%d", self.cfg.gateway_id, self.cfg.ingest.host,
                 self.cfg.ingest.port, self.cfg.hub.host, self.cfg.hub.port)
        try:
            while not self.stopping.is_set() and not (until and until()):
                self.drain(0.2)
                while self.maybe_batch() is not None:
                    pass  # a backlog goes out in as many full batches as it makes
                if time.monotonic() - self.last_housekeeping > 2:
                    self.keep_quarantine_within_budget()
                    self.share.forget_full()
                    self.keep_within_quota()
                    self.waiting = self.store.count_unbatched()  # the quota may have dropped some
                    self._tell_store_state()
                    self.maybe_close_epoch()
                    self.last_housekeeping = time.monotonic()
                if self.epoch_close_requested.is_set():
                    self.epoch_close_requested.clear()
                    self.maybe_batch(force=True)
                    self.maybe_close_epoch(force=True)
            self.finish_in_flight()
            self.aggregates.extend(self.aggregator.flush())
            self.maybe_batch(force=True)
            self.maybe_close_epoch(force=True)  # what was made is anchored, even if the epoch is short
            if self.anchorer is not None:  # a few seconds for the chain to take it; else at the next start
                self.anchorer.wake.set()
                deadline = time.monotonic() + 5
                while self.store.epochs_to_anchor(1) and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            if self.anchorer is not None:
                self.anchorer.stop()
                self.anchorer.join(10)
            self.verifier.close()
            for port in self.serial:
                port.stop()
            self.ingest.stop()
            self.uplink.stop()
            self.uplink.join(5)
            self.store.close()
            self.guard.close()
            self.live.remove()

    def _tell_store_state(self) -> None:
        quota = f"{self.cfg.store_max_bytes / 1e6:g} MB"
        if self.refusing:
            self.live.set("store", f"over its quota of {quota}: refusing new messages until the hub has "
                                   "caught up (policy refuse_new)", False)
        else:
            self.live.set("store", f"within its quota of {quota} (policy {self.cfg.store_policy})", True)

    def request_epoch_close(self) -> None:
        """Batch what waits and close the epoch now, from any thread (its anchoring follows)."""
        self.epoch_close_requested.set()

    def stop(self) -> None:
        self.stopping.set()
