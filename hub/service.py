"""`govedge hub run`: gateway batches in, verified, stored once.

ingest (MQTT 5 shared subscription, manual acks) -> verify (the gateway's
signature and Merkle root here, every device signature in worker processes)
-> store (SQLite or PostgreSQL, one transaction per batch) -> confirm (to the
gateway, on its own ``committed`` topic, once committed: govedge.core.confirm)
-> acknowledge (to the broker). The gateways' status records (heartbeats,
govedge.core.heartbeat) come the same way on their ``status`` topics: verified,
the latest of each gateway kept (``gateway_status``), never confirmed.

Several hub workers with the same ``share_group`` on one broker (or cluster)
split the batches between them: the broker hands each batch to one worker.
A batch that comes again (a redelivery, a gateway that sent it twice) is
stored once, by its id. A batch that fails a check is kept in the ``rejected``
table with its reason and acknowledged: it never blocks the ones behind it. A
device message that fails in a correctly signed batch is refused alone: the
batch and its other readings are stored.

No input can stop the service: whatever handling one batch or epoch record
raises refuses that one (``internal_error``), each in a savepoint of the
step's transaction; and a crash guard (govedge.core.crashguard) notes what is being
handled, so that an input the process keeps dying on is refused, not handled
again and again.

The registry and the gateways file are reloaded on SIGHUP and when either file
changes (looked at every couple of seconds); a file that does not load leaves
the one before in force. A batch (or epoch record) refused only because its
gateway is not known (``unknown_gateway``) waits in ``waiting_for_gateway``,
bounded per gateway and in total, and is verified again after each reload.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import re
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from govedge.core import batch, confirm, cose, heartbeat, topics, wire
from govedge.core.epoch import MAX_EPOCH_RECORD_BYTES, EpochRecord, verify_epoch
from govedge.core.crashguard import POISON, SUSPECT, CrashGuard
from govedge.core.config import ConfigError
from govedge.core.verifypool import RELOAD_ERRORS, FileWatch, Result, Verifier, check, reload_error

from .config import HubConfig
from .gateways import GatewayListError, Gateways
from .store import DUPLICATE, INTERNAL_ERROR, HubStore, RejectedMessage, StoreError, internal_error, one_line, text_of

log = logging.getLogger("govedge.hub")

CHUNK = 128  # device messages per trip to a verification worker
HOUSEKEEPING_S = 2.0  # how often the rejected table is held to its budget, when something was rejected
RELOAD_CHECK_S = 2.0  # how often the registry and gateways files are looked at
STORE_HOUSEKEEPING_S = 3600.0  # how often the store's coming partitions are made and its retention applied
# deliveries of gateways not known yet, kept until a reload (rows, bytes); beyond: rejected as unknown_gateway
WAITING_PER_GATEWAY = (64, 16 * 1024 * 1024)
WAITING_TOTAL = (256, 64 * 1024 * 1024)
RECHECK_CHUNK = 256  # unknown_device rows verified again per transaction after a registry reload


@dataclass
class Delivery:
    topic: str
    payload: bytes
    ack: Callable[[], None]


@dataclass
class Pending:
    """A batch on its way through verification."""

    delivery: Delivery
    batch: batch.Batch | None
    error: tuple[str, str] | None  # (code, reason) when it failed before the device messages
    chunks: list[Future]
    epoch: EpochRecord | None = None  # an epoch record instead of a batch
    outcome: tuple[str, str | None] | None = None  # once stored: (outcome, code) confirmed to the gateway
    heartbeat: heartbeat.Heartbeat | None = None  # a gateway's status record instead of a batch
    results: list | None = None  # the device messages' verdicts, once taken from the verification workers


class HubService:
    def __init__(self, cfg: HubConfig):
        self.cfg = cfg
        self.counters: Counter = Counter()
        self.rejected_codes: Counter = Counter()  # what was refused, by code (govedge.hub.metrics)
        self.store = HubStore(cfg.store, cfg.rejected_keep_bytes, cfg.synchronous)
        state_dir = _state_dir(cfg)
        try:
            self.guard = CrashGuard(state_dir / ("handling-" + re.sub(r"[^A-Za-z0-9._-]", "_", cfg.mqtt.client_id)))
        except OSError as exc:
            raise ConfigError(f"[hub] state_dir {state_dir}: the crash guard's journal cannot be kept there "
                              f"({exc.strerror or exc}); give a folder the hub may write") from None
        self.bounds_learnt: list[tuple[str, str, int]] = []  # to write with the next commit
        self.prune_due = 0.0  # when the rejected table is held to its budget next (monotonic)
        self.store_due = 0.0  # partitions ahead and retention: at the first housekeeping, then hourly
        self.gateways_watch = FileWatch(cfg.gateways)  # before the load: a change meanwhile is seen
        self.registry_watch = FileWatch(cfg.registry)
        self.gateways = Gateways.load(cfg.gateways)
        self.metrics = None
        if cfg.metrics_port:  # before the workers: a port in use stops the start with one line, nothing started
            from .metrics import serve

            self.metrics = serve(self, cfg.metrics_port)
        self.verifier = Verifier(cfg.registry, cfg.verify_workers)
        self.reload_requested = threading.Event()  # SIGHUP
        self.last_reload_look = time.monotonic()
        self.store.key_id_of = lambda r: self.verifier.registry.key_rule(r.device_id, r.key).key_id
        with self.store.transaction():
            self.bounds = self.store.key_bounds()  # (signer, key id) -> valid below; learnt, kept in the store
            self.flag_revoked()
        self.inbox: "queue.Queue[Delivery]" = queue.Queue()
        self.in_flight: deque[Pending] = deque()
        self.stopping = threading.Event()
        self.subscribed = threading.Event()
        ep = cfg.mqtt
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=ep.client_id,
                                  protocol=paho.MQTTv5 if cfg.share_group else paho.MQTTv311,
                                  clean_session=None if cfg.share_group else False, manual_ack=True)
        if ep.user:
            self.client.username_pw_set(ep.user, ep.password)
        if ep.tls:
            self.client.tls_set(ca_certs=ep.ca, certfile=ep.cert, keyfile=ep.key)
        self.client.reconnect_delay_set(random.uniform(1, 2), 60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        # without a share group (a broker without MQTT 5, such as the demo's amqtt): one worker alone
        share = f"$share/{cfg.share_group}/" if cfg.share_group else ""
        self.topic = share + topics.ALL_BATCHES
        self.epoch_topic = share + topics.ALL_EPOCHS
        self.status_topic = share + topics.ALL_GATEWAY_STATUS

    # -- ingest --------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            log.error("hub: broker %s:%d refused the connection: %s", self.cfg.mqtt.host, self.cfg.mqtt.port, reason)
            return
        if self.cfg.share_group:
            client.subscribe([(self.topic, SubscribeOptions(qos=1)), (self.epoch_topic, SubscribeOptions(qos=1)),
                              (self.status_topic, SubscribeOptions(qos=1))])
        else:
            client.subscribe([(self.topic, 1), (self.epoch_topic, 1), (self.status_topic, 1)])

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        """The broker's SUBACK: from here on its session keeps what the gateways publish for this hub."""
        refused = [f"{topic} ({reason})" for topic, reason in zip((self.topic, self.epoch_topic, self.status_topic),
                                                                   reasons) if reason.is_failure]
        if refused:
            log.error("hub: broker %s:%d refused the subscription to %s: check the broker's ACL (the hub's login "
                      "reads the gateways' batch, epoch and status topics)", self.cfg.mqtt.host, self.cfg.mqtt.port,
                      ", ".join(refused))
            return
        log.info("hub: subscribed to %s on %s:%d as %s", self.topic, self.cfg.mqtt.host, self.cfg.mqtt.port,
                 self.cfg.mqtt.client_id)
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.subscribed.clear()
        log.warning("hub: disconnected from broker %s:%d (%s)", self.cfg.mqtt.host, self.cfg.mqtt.port, reason)

    def _on_message(self, client, userdata, msg):
        self.counters["received"] += 1
        mid, qos = msg.mid, msg.qos
        self.inbox.put(Delivery(msg.topic, bytes(msg.payload), lambda: client.ack(mid, qos) if qos else None))

    # -- verify ---------------------------------------------------------------------------

    def _check(self, d: Delivery) -> Pending:
        """The gateway's part here; the device messages go to the workers. Never raises."""
        try:
            return self._check_unguarded(d)
        except Exception as exc:  # noqa: BLE001 - whatever one input raises refuses it alone
            return Pending(d, None, internal_error(exc), [])

    def _check_unguarded(self, d: Delivery) -> Pending:
        if _is_status(d.topic):  # a heartbeat: the gateway's active key only
            try:
                h = heartbeat.verify(d.payload, self.gateways.active)
            except wire.WireError as exc:
                return Pending(d, None, (exc.code, exc.reason), [])
            if topics.gateway_of(d.topic) != h.gateway_id:
                return Pending(d, None, ("wrong_topic", f"status record of {h.gateway_id!r} came on {d.topic}"), [])
            return Pending(d, None, None, [], heartbeat=h)
        if d.topic.endswith("/epoch"):
            rec, refusal, _rule = self._gateway_signed(d.payload, verify_epoch, "epoch record", _epoch_extent)
            if refusal is not None:
                return Pending(d, None, refusal, [])
            if topics.gateway_of(d.topic) != rec.epoch.gateway_id:
                return Pending(d, None, ("wrong_topic", f"epoch record of {rec.epoch.gateway_id!r} came on "
                                                       f"{d.topic}"), [])
            return Pending(d, None, None, [], rec)
        b, refusal, rule = self._gateway_signed(d.payload, batch.verify, "batch", lambda b: (b.seq, b.created))
        if refusal is not None:
            return Pending(d, None, refusal, [])
        if rule is None and self.gateways.others(b.gateway_id):  # the first batch under a new key bounds the older
            for _public, rule in self.gateways.others(b.gateway_id):
                if ("gw/" + b.gateway_id, rule.key_id) not in self.bounds:
                    self.bounds["gw/" + b.gateway_id, rule.key_id] = b.seq
                    self.bounds_learnt.append(("gw/" + b.gateway_id, rule.key_id, b.seq))
        topic_gateway = topics.gateway_of(d.topic)
        if topic_gateway != b.gateway_id:
            return Pending(d, b, ("wrong_topic", f"batch {b.id} came on the topic of {topic_gateway!r}"), [])
        chunks = [self.verifier.submit(list(b.messages[i:i + CHUNK])) for i in range(0, len(b.messages), CHUNK)]
        return Pending(d, b, None, chunks)

    def _gateway_signed(self, payload: bytes, verify: Callable, what: str, extent: Callable):
        """``verify(payload, keys)`` (a batch or an epoch record) under the gateway key rule (docs/SECURITY.md, "Key
        lifecycle"): nearly always the active key verifies; else a retired or revoked key of the gateway that
        verifies must still be valid for ``extent(verified)``, (the highest batch sequence number, the latest
        batch creation time). Returns (verified, None, the KeyRule of the key or None for the active key), or
        (None, (code, reason), None)."""
        try:
            return verify(payload, self.gateways.active), None, None
        except wire.WireError as exc:
            refusal = (exc.code, exc.reason)
        gateway_id = _unverified_kid(payload)
        for public, rule in self.gateways.others(gateway_id):
            try:
                verified = verify(payload, lambda _g, k=public: [k])
            except wire.WireError:
                continue
            seq, created = extent(verified)
            refused = rule.refusal(seq, created, self.bounds.get(("gw/" + gateway_id, rule.key_id)), what=what)
            return (None, refused, None) if refused is not None else (verified, None, rule)
        if refusal[0] == "unknown_gateway" and self.gateways.others(gateway_id):
            refusal = ("bad_signature", f"signature does not verify with the key(s) of gateway {gateway_id!r} "
                                        "(it has no active key)")
        return None, refusal, None

    def _results(self, p: Pending) -> list[Result]:
        if p.results is None:
            p.results = self._gather(p)
        return p.results

    def _gather(self, p: Pending) -> list[Result]:
        out: list[Result] = []
        for i, future in enumerate(p.chunks):
            chunk = list(p.batch.messages[i * CHUNK:(i + 1) * CHUNK])
            try:
                out.extend(self.verifier.result(chunk, future))
            except Exception as exc:  # noqa: BLE001 - checking the chunk raised: each message alone, here
                log.error("batch %s: checking messages %d to %d raised %s; checking each alone", p.batch.id,
                          i * CHUNK, i * CHUNK + len(chunk) - 1, type(exc).__name__)
                out.extend(self._check_each(chunk))
        return out

    def _check_each(self, messages: list[bytes]) -> list[Result]:
        out: list[Result] = []
        for m in messages:
            try:
                out.extend(check([m], self.verifier.registry))
            except Exception as exc:  # noqa: BLE001 - this message alone is refused
                out.append(internal_error(exc))
        return out

    # -- store ----------------------------------------------------------------------------

    def _store(self, p: Pending) -> None:
        """Inside the caller's transaction: stored, counted as a duplicate, or rejected. Raises only
        when the store is unavailable; whatever else handling ``p`` raises refuses it alone."""
        self.store.savepoint("delivery")
        try:
            self._store_unguarded(p)
        except Exception as exc:  # noqa: BLE001 - whatever one input raises refuses it alone
            if self.store.unavailable(exc):
                raise
            self.store.undo_to("delivery")
            what = f"batch {p.batch.id}: " if p.batch else ""
            log.error("%sthe hub raised %s while handling a delivery on %s: %s", what, type(exc).__name__,
                      one_line(p.delivery.topic, 200), text_of(exc))
            try:
                p.outcome = None
                self._reject(p, *internal_error(exc, what))
                p.outcome = ("rejected", INTERNAL_ERROR)
            except Exception as again:  # noqa: BLE001 - not even its refusal can be kept: counted, logged
                if self.store.unavailable(again):
                    raise
                self.store.undo_to("delivery")
                self.counters["rejected_unrecorded"] += 1
                log.error("a delivery on %s (SHA-256 %s, %d bytes) could not be kept in rejected either (%s); "
                          "acknowledged without a record", one_line(p.delivery.topic, 200),
                          hashlib.sha256(p.delivery.payload).hexdigest(), len(p.delivery.payload),
                          type(again).__name__)
        self.store.release("delivery")

    def _store_unguarded(self, p: Pending) -> None:
        if _is_status(p.delivery.topic):
            self._store_heartbeat(p)
            return
        if p.epoch is not None and p.error is None:
            stored = self.store.add_epoch(p.epoch)
            self.store.heard(p.epoch.epoch.gateway_id)
            p.outcome = ("stored" if stored else "duplicate", None)
            self.counters["epochs" if stored else "duplicates"] += 1
            log.info("epoch %s: %d batches, %s", batch.batch_id(p.epoch.epoch.gateway_id, p.epoch.epoch.store_id,
                                                             p.epoch.epoch.number),
                     len(p.epoch.epoch.heads), "anchored in block %s" % p.epoch.receipt.block if stored else
                     "had it already")
            return
        if p.error is not None:
            if p.error[0] == "unknown_gateway" and self._wait_for_gateway(p):
                p.outcome = ("waiting", p.error[0])
                return
            self._reject(p, *p.error)
            p.outcome = ("rejected", p.error[0])
            return
        b = p.batch
        results = self._results(p)
        self._key_rules(results)
        readings = [None if isinstance(r, tuple) else r for r in results]
        try:
            by_store = self.store.add_batch(b, readings)
        except StoreError as exc:
            self._reject(p, "conflicting_batch", str(exc))
            p.outcome = ("rejected", "conflicting_batch")
            return
        except Exception as exc:  # noqa: BLE001 - something in the batch the store cannot take: find it
            if self.store.unavailable(exc):
                raise
            self.store.undo_to("delivery")  # the caller's savepoint (_store)
            log.error("batch %s: %s while storing it; storing its readings one by one", b.id, type(exc).__name__)
            by_store = self.store.add_batch_each(b, readings)
        self.store.heard(b.gateway_id)
        if by_store is None:
            p.outcome = ("duplicate", None)
            self.counters["duplicates"] += 1
            log.info("batch %s: had it already", b.id)
            return
        for leaf, refusal in by_store.items():
            results[leaf] = refusal
        refused = [(leaf, r) for leaf, r in enumerate(results) if isinstance(r, tuple)]
        for leaf, (code, reason) in refused:
            self._reject(p, code, f"batch {b.id}, message {leaf}: {reason}", b.messages[leaf], leaf)
        p.outcome = ("stored", None)
        self.counters["batches"] += 1
        self.counters["readings"] += len(results) - len(refused)
        if refused:
            leaf, (code, reason) = refused[0]
            log.warning("batch %s: %d readings, %d aggregates; %d refused (message %d: %s: %s)", b.id,
                        len(results) - len(refused), len(b.aggregates), len(refused), leaf, code, reason)
        else:
            log.info("batch %s: %d readings, %d aggregates", b.id, len(results), len(b.aggregates))

    def _store_heartbeat(self, p: Pending) -> None:
        """A gateway's status record: kept as its latest, or refused (in ``rejected``, as any delivery); never
        confirmed, never waiting for its gateway (the next one comes a heartbeat later)."""
        refusal = p.error or self.store.add_heartbeat(p.heartbeat)
        if refusal is DUPLICATE:
            self.counters["heartbeat_duplicates"] += 1
        elif refusal is not None:
            self._reject(p, *refusal)
        else:
            self.counters["heartbeats"] += 1

    def _key_rules(self, results: list[Result]) -> None:
        """Refuses, in place, the readings signed by a key no longer valid for them (govedge.core.registry's
        KeyRule); the first reading under a device's active key sets the boundary of its older keys."""
        registry = self.verifier.registry
        rules = [None if isinstance(r, tuple) else registry.key_rule(r.device_id, r.key) for r in results]
        for r, rule in zip(results, rules):  # learnt first: an old key's reading above it in the batch is refused
            if rule is not None and rule.status == "active" and len(registry.public_keys(r.device_id)) > 1:
                for old in registry.retired_ids(r.device_id):
                    if self.bounds.get((r.device_id, old), r.seq + 1) > r.seq:
                        self.bounds[r.device_id, old] = r.seq
                        self.bounds_learnt.append((r.device_id, old, r.seq))
        for i, (r, rule) in enumerate(zip(results, rules)):
            if rule is not None and rule.status != "active":
                refused = rule.refusal(r.seq, r.time, self.bounds.get((r.device_id, rule.key_id)))
                if refused is not None:
                    results[i] = refused

    def flag_revoked(self) -> None:
        """Inside a transaction: flags the stored readings of the registry's revoked keys (docs/SECURITY.md)."""
        for device in self.verifier.registry.devices.values():
            for k in device.keys:
                if k.status == "revoked":
                    n = self.store.flag_revoked(device.device_id, k.key_id, k.rule().until)
                    if n:
                        log.warning("%s: %d stored readings signed by the revoked key %s flagged revoked_key",
                                    device.device_id, n, k.key_id)

    def _wait_for_gateway(self, p: Pending) -> bool:
        """Keeps a delivery of a gateway the hub does not know (yet) for the next reload; False (reject it) when
        its gateway or the table is at its bound."""
        d = p.delivery
        if self.store.wait_for_gateway(d.topic, topics.gateway_of(d.topic) or "", d.payload, WAITING_PER_GATEWAY,
                                       WAITING_TOTAL):
            self.counters["waiting_for_gateway"] += 1
            log.warning("waiting: a delivery on %s from a gateway not in %s; verified again when it is",
                        one_line(d.topic, 200), self.cfg.gateways)
            return True
        self.counters["waiting_for_gateway_full"] += 1
        return False

    # -- reloads --------------------------------------------------------------------------

    def maybe_reload(self, force: bool = False) -> bool:
        """Reloads the registry and the gateways file when they changed (``force``: both, SIGHUP); flags the
        stored readings of newly revoked keys; verifies the deliveries waiting for a gateway again. A file that
        does not load leaves the one before in force (one log line). True if anything was reloaded."""
        registry_changed = self.registry_watch.changed() or force
        gateways_changed = self.gateways_watch.changed() or force
        if not (registry_changed or gateways_changed):
            return False
        self.finish_in_flight()  # what is in hand was checked against the files before
        reloaded = False
        if gateways_changed:
            try:
                self.gateways = Gateways.load(self.cfg.gateways)
                reloaded = True
                log.info("gateways %s reloaded", self.cfg.gateways)
            except (GatewayListError, *RELOAD_ERRORS) as exc:
                self.counters["reload_failures"] += 1
                log.error("gateways not reloaded, the list loaded before stays in force: %s",
                          reload_error(self.cfg.gateways, exc))
        if registry_changed:
            try:
                registry = self.verifier.reload()
                reloaded = True
                log.info("registry %s reloaded: %d devices", self.cfg.registry, len(registry.devices))
                with self.store.transaction():
                    self.flag_revoked()
            except RELOAD_ERRORS as exc:
                self.counters["reload_failures"] += 1
                log.error("registry not reloaded, the one loaded before stays in force: %s",
                          reload_error(self.cfg.registry, exc))
        if reloaded:
            self.counters["reloads"] += 1
            self.verify_waiting()
            if registry_changed:
                self.verify_unknown_devices()
        return reloaded

    def verify_waiting(self) -> int:
        """Verifies the deliveries waiting for their gateway again, oldest first; those of a gateway known now
        are stored or rejected as any other. Returns how many left the table."""
        rows = self.store.waiting_for_gateway()
        done = 0
        for row_id, topic, payload in rows:
            d = Delivery(topic, payload, lambda: None)
            verdict = self.guard.verdict(payload)
            with self.guard.handling([payload], alone=verdict == SUSPECT):
                p = (Pending(d, None, (INTERNAL_ERROR, self.guard.poison_note(payload)), []) if verdict == POISON
                     else self._check(d))
                if p.error is not None and p.error[0] == "unknown_gateway":
                    continue
                with self.store.transaction():
                    self.store.done_waiting(row_id)
                    self._store(p)
                    self._keep_bounds()
            self.guard.handled([payload])
            done += 1
        if done:
            log.info("waiting: %d of %d deliveries verified again", done, len(rows))
        return done

    def verify_unknown_devices(self) -> int:
        """Verifies again the device messages refused as ``unknown_device`` whose device the registry knows now,
        oldest first, RECHECK_CHUNK to a transaction: one that verifies and passes the key rule is stored as the
        reading of its batch's leaf (its row deleted, the leaf off ``batches.refused``); one refused still keeps
        its row with the new code. Run twice, or after a crash in the middle, it stores nothing twice. Returns
        how many were stored."""
        known = self.verifier.registry.devices
        ids = [i for i, device in self.store.unknown_device_rows() if device in known]
        stored = 0
        for start in range(0, len(ids), RECHECK_CHUNK):
            with self.store.transaction():
                batches: dict[tuple[str, int], batch.Batch | None] = {}
                for row in self.store.unknown_device_messages(ids[start:start + RECHECK_CHUNK]):
                    stored += self._verify_refused(row, batches)
                self._keep_bounds()
        if ids:
            self.counters["readings"] += stored
            log.info("unknown_device: %d of %d refused device messages of devices known now stored", stored,
                     len(ids))
        return stored

    def _verify_refused(self, row: RejectedMessage, batches: dict) -> bool:
        """One of verify_unknown_devices's rows, in a savepoint: True if stored."""
        verdict = self.guard.verdict(row.payload)
        if verdict == POISON:
            self.store.recode_rejected(row.id, INTERNAL_ERROR, self.guard.poison_note(row.payload))
            return False
        self.store.savepoint("refused")
        try:
            with self.guard.handling([row.payload], alone=verdict == SUSPECT):
                key = (row.gateway_id, row.batch_seq, row.store_id)
                if key not in batches:
                    cose = self.store.batch_bytes(*key)
                    try:
                        batches[key] = None if cose is None else batch.verify(cose, self.gateways)
                    except wire.WireError:  # its gateway is gone from the list: the row stays as it is
                        batches[key] = None
                b = batches[key]
                if b is None or row.leaf >= len(b.messages) or b.messages[row.leaf] != row.payload:
                    self.store.release("refused")
                    return False
                results = self._check_each([row.payload])
                self._key_rules(results)
                refusal = results[0] if isinstance(results[0], tuple) else \
                    self.store.add_refused_reading(b, row, results[0])
                if refusal is not None:
                    self.store.recode_rejected(row.id, refusal[0], f"batch {b.id}, message {row.leaf}: {refusal[1]}")
        except Exception as exc:  # noqa: BLE001 - whatever one message raises leaves it refused, with that reason
            if self.store.unavailable(exc):
                raise
            self.store.undo_to("refused")
            refusal = internal_error(exc)
            self.store.recode_rejected(row.id, *refusal)
        self.store.release("refused")
        self.guard.handled([row.payload])
        return refusal is None

    def _reject(self, p: Pending, code: str, reason: str, message: bytes | None = None,
                leaf: int | None = None) -> None:
        """Keeps the refused delivery, or one refused device ``message`` (``leaf``) of its batch, in ``rejected``."""
        device_id = seq = None
        if message is not None:
            device_id, seq = _unverified_id(message)
        self.store.reject(p.delivery.topic, topics.gateway_of(p.delivery.topic), code, reason,
                          p.delivery.payload if message is None else message, device_id, seq,
                          None if message is None else p.batch.seq, leaf,
                          None if message is None else p.batch.store_id or "")
        self.counters["rejected"] += 1
        self.counters[f"rejected_{code}"] += 1
        self.rejected_codes[code] += 1
        self.prune_due = min(self.prune_due, time.monotonic() + HOUSEKEEPING_S)
        if message is None:
            log.warning("rejected: %s from %s: %s", code, one_line(p.delivery.topic, 200), reason)

    def step(self, max_wait_s: float) -> int:
        """Take what arrived into verification; store the verified batches in order; ack them."""
        items: list[Delivery] = []
        try:
            items.append(self.inbox.get(timeout=max_wait_s) if not self.in_flight and max_wait_s > 0
                         else self.inbox.get_nowait())
            while len(items) < 64:
                items.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        done = 0
        group: list[Delivery] = []
        for d in items:
            verdict = self.guard.verdict(d.payload)
            if verdict == SUSPECT:
                self._alone(d)
                done += 1
            elif verdict == POISON:
                self.in_flight.append(Pending(d, None, (INTERNAL_ERROR, self.guard.poison_note(d.payload)), []))
            else:
                group.append(d)
        if group:  # noted from here until committed: a process that dies meanwhile makes them suspects
            with self.guard.handling(d.payload for d in group):
                self.in_flight.extend(self._check(d) for d in group)
        return done + self._commit_ready(wait=not items)

    def finish_in_flight(self) -> None:
        while self.in_flight:
            self._commit_ready(wait=True)

    def _commit_ready(self, wait: bool) -> int:
        """Stores the verified deliveries in order (``wait``: the oldest, done or not) and acks them."""
        ready: list[Pending] = []
        while self.in_flight and (wait or all(f.done() for f in self.in_flight[0].chunks)
                                  or len(self.in_flight) > 8):
            ready.append(self.in_flight.popleft())
            wait = False
        if not ready:
            return 0
        with self.guard.handling(p.delivery.payload for p in ready):
            self.store.prepare(r.time if r.time is not None else p.batch.created for p in ready
                               if p.batch is not None and p.error is None
                               for r in self._results(p) if not isinstance(r, tuple))
            with self.store.transaction():
                self.store.lock_gateways({g for p in ready if (g := topics.gateway_of(p.delivery.topic))})
                for p in ready:
                    self._store(p)
                self._keep_bounds()
        for p in ready:  # committed: now the gateway and then the broker may forget them
            self._confirm(p)
            p.delivery.ack()
        return len(ready)

    def _confirm(self, p: Pending) -> None:
        """Tells the gateway whose topic it came on what the hub committed of the delivery (docs/FORMAT.md,
        "Acknowledgements between gateway and hub"); after the commit, before the broker's ack. A delivery the
        hub could not even keep as refused is not confirmed: the gateway sends it again."""
        gateway_id = topics.gateway_of(p.delivery.topic)
        if p.outcome is None or gateway_id is None or _is_status(p.delivery.topic):
            return
        kind = "epoch" if p.delivery.topic.endswith("/epoch") else "batch"
        if p.epoch is not None:
            item = (p.epoch.epoch.store_id, p.epoch.epoch.number)
        elif p.batch is not None:
            item = (p.batch.store_id, p.batch.seq)
        else:  # refused before its signature held: what it names (only its gateway may publish on its topic)
            item = confirm.unverified_item(p.delivery.payload, kind)
            if item is None:
                return  # names no item: nothing a gateway waits for
        outcome, code = p.outcome
        self.client.publish(topics.committed(gateway_id),
                            confirm.dumps(confirm.Confirmation(kind, *item, outcome, code)), qos=1)
        self.counters["confirmed"] += 1

    def _alone(self, d: Delivery) -> None:
        """A suspect: the process died while handling it among others. Handled by itself."""
        log.warning("crash guard: a suspect from %s (the process died with it in hand), handled by itself",
                    one_line(d.topic, 200))
        with self.guard.handling([d.payload], alone=True):
            p = self._check(d)
            with self.store.transaction():
                self._store(p)
                self._keep_bounds()
        self._confirm(p)
        d.ack()
        self.guard.handled([d.payload])

    def _keep_bounds(self) -> None:
        for signer, key_id, seq in self.bounds_learnt:
            self.store.learn_key_bound(signer, key_id, seq)
        self.bounds_learnt.clear()

    def housekeeping(self) -> None:
        """Holds the rejected table to its budget (when something was rejected since the last time); hourly,
        the store's coming months and its retention (``keep_months``)."""
        if time.monotonic() >= self.store_due:
            self.store_due = time.monotonic() + STORE_HOUSEKEEPING_S
            self.keep_store()
        if time.monotonic() < self.prune_due:
            return
        self.prune_due = float("inf")
        try:
            with self.store.transaction():
                pruned = self.store.prune_rejected(self.cfg.rejected_max_bytes, self.cfg.rejected_max_rows)
        except Exception as exc:
            if self.store.unavailable(exc):
                raise
            log.error("rejected: holding it to its budget raised %s: %s; trying again in a minute",
                      type(exc).__name__, text_of(exc))
            self.prune_due = time.monotonic() + 60
            return
        if pruned:
            self.counters["rejected_pruned"] += sum(pruned.values())
            log.warning("rejected: over its budget (%d bytes, %d rows); pruned the oldest %d rows (%s); %d "
                        "pruned since the start", self.cfg.rejected_max_bytes, self.cfg.rejected_max_rows,
                        sum(pruned.values()), ", ".join(f"{g or '?'}: {n}" for g, n in sorted(pruned.items())),
                        self.counters["rejected_pruned"])

    def keep_store(self) -> None:
        """The partitions of this month and the next ones made ahead (PostgreSQL), and what is older than
        ``[store] keep_months`` deleted, its monthly partitions dropped."""
        try:
            self.store.prepare_ahead()
            gone = self.store.expire(self.cfg.keep_months)
        except Exception as exc:
            if self.store.unavailable(exc):
                raise
            log.error("store: keeping its partitions and retention raised %s: %s; trying again in an hour",
                      type(exc).__name__, text_of(exc))
            return
        if gone["readings"] or gone["partitions"] or gone["aggregates"]:
            self.counters["expired_readings"] += gone["readings"]
            log.info("store: %d readings older than %d months deleted (%d partitions dropped), %d aggregates",
                     gone["readings"], self.cfg.keep_months, gone["partitions"], gone["aggregates"])

    # -- the service ----------------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> None:
        if self.cfg.share_group:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive,
                                      clean_start=False, properties=props)
        else:
            self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive)
        self.client.loop_start()
        log.info("hub running: store %s, %d verification workers", self.store.dialect, self.verifier.workers)
        hup = None
        if threading.current_thread() is threading.main_thread():  # SIGHUP: reload registry and gateways
            hup = signal.signal(signal.SIGHUP, lambda *a: self.reload_requested.set())
        try:
            self.verify_waiting()  # a gateway or a device may have been added while the hub was stopped
            self.verify_unknown_devices()
            while not self.stopping.is_set() and not (until and until()):
                self.step(0.2)
                self.housekeeping()
                if self.reload_requested.is_set() or time.monotonic() - self.last_reload_look > RELOAD_CHECK_S:
                    force = self.reload_requested.is_set()
                    self.reload_requested.clear()
                    self.maybe_reload(force)
                    self.last_reload_look = time.monotonic()
            while self.in_flight:
                self.step(0.0)
        except Exception as exc:
            if not self.store.unavailable(exc):
                raise
            # nothing uncommitted was acknowledged: the broker hands it over again
            log.error("hub: the store %s cannot be used (%s: %s); stopping", self.store.where,
                      type(exc).__name__, text_of(exc))
            raise SystemExit(1) from None
        finally:
            if hup is not None:
                signal.signal(signal.SIGHUP, hup)
            self.client.loop_stop()
            self.client.disconnect()
            if self.metrics is not None:
                self.metrics.close()
            self.verifier.close()
            self.store.close()
            self.guard.close()

    def stop(self) -> None:
        self.stopping.set()


def _state_dir(cfg: HubConfig) -> Path:
    """[hub] state_dir; for a HubConfig made without one, the SQLite store's folder or the working directory."""
    if cfg.state_dir is not None:
        return cfg.state_dir
    return Path(cfg.store.removeprefix("sqlite://")).parent if cfg.store.startswith("sqlite://") else Path(".")


def _is_status(topic: str) -> bool:
    """Whether a delivery came on a gateway's status topic (a heartbeat)."""
    return topic.endswith("/status") and topics.gateway_of(topic) is not None


def _epoch_extent(rec: EpochRecord) -> tuple[int, int | None]:
    """What a gateway key must have been valid for to sign the epoch record: its last batch (the highest sequence
    number it names) and the latest creation time of its batch heads (None when a head does not read)."""
    try:
        heads = [cose.strict_loads(h, "batch head") for h in rec.epoch.heads]
        return max([rec.last, *(h["seq"] for h in heads)]), max(h["created"] for h in heads)
    except Exception:  # noqa: BLE001 - a head that does not read: no time, so a revoked key's record is refused
        return rec.last, None


def _unverified_kid(data: bytes) -> str:
    """The signer a batch or an epoch record names (not verified)."""
    try:
        return wire.decode_envelope(data, max(batch.MAX_BATCH_BYTES, MAX_EPOCH_RECORD_BYTES), "batch").kid
    except Exception:  # noqa: BLE001 - refused already; only its name is looked for
        return ""


def _unverified_id(message: bytes) -> tuple[str | None, int | None]:
    """A refused device message's device id and sequence number, as far as it reads (not verified)."""
    try:
        r = wire.decode_unverified(message)
        return r.device_id, r.seq
    except Exception:  # noqa: BLE001 - it was refused already; only its names are looked for
        pass
    try:
        return wire.decode_envelope(message).kid, None
    except Exception:  # noqa: BLE001
        return None, None
