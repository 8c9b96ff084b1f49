"""`govedge hub run`: gateway batches in, verified, stored once.

ingest (MQTT 5 shared subscription, manual acks) -> verify (the gateway's
signature and Merkle root here, every device signature in worker processes)
-> store (SQLite or PostgreSQL, one transaction per batch) -> acknowledge.

Several hub workers with the same ``share_group`` on one broker (or cluster)
split the batches between them: the broker hands each batch to one worker.
A batch that comes again (a redelivery, a gateway that sent it twice) is
stored once, by its id. A batch that fails a check is kept in the ``rejected``
table with its reason and acknowledged: it never blocks the ones behind it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from govedge import batch, proof, topics, wire
from govedge.gateway.verify import Result, Verifier

from .config import HubConfig
from .gateways import Gateways
from .store import HubStore, StoreError

log = logging.getLogger("govedge.hub")

CHUNK = 128  # device messages per trip to a verification worker


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
    epoch: proof.EpochRecord | None = None  # an epoch record instead of a batch


class HubService:
    def __init__(self, cfg: HubConfig):
        self.cfg = cfg
        self.counters: Counter = Counter()
        self.store = HubStore(cfg.store)
        self.gateways = Gateways.load(cfg.gateways)
        self.verifier = Verifier(cfg.registry, cfg.verify_workers)
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
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        # without a share group (a broker without MQTT 5, such as the demo's amqtt): one worker alone
        share = f"$share/{cfg.share_group}/" if cfg.share_group else ""
        self.topic = share + topics.ALL_BATCHES
        self.epoch_topic = share + topics.ALL_EPOCHS

    # -- ingest --------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            log.error("hub: broker %s:%d refused the connection: %s", self.cfg.mqtt.host, self.cfg.mqtt.port, reason)
            return
        if self.cfg.share_group:
            client.subscribe([(self.topic, SubscribeOptions(qos=1)), (self.epoch_topic, SubscribeOptions(qos=1))])
        else:
            client.subscribe([(self.topic, 1), (self.epoch_topic, 1)])
        log.info("hub: subscribed to %s on %s:%d as %s", self.topic, self.cfg.mqtt.host, self.cfg.mqtt.port,
                 self.cfg.mqtt.client_id)

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.subscribed.clear()
        log.warning("hub: disconnected from broker %s:%d (%s)", self.cfg.mqtt.host, self.cfg.mqtt.port, reason)

    def _on_message(self, client, userdata, msg):
        self.counters["received"] += 1
        mid, qos = msg.mid, msg.qos
        self.inbox.put(Delivery(msg.topic, bytes(msg.payload), lambda: client.ack(mid, qos) if qos else None))

    # -- verify ---------------------------------------------------------------------------

    def _check(self, d: Delivery) -> Pending:
        """The gateway's part here; the device messages go to the workers."""
        if d.topic.endswith("/epoch"):
            try:
                rec = proof.verify_epoch(d.payload, self.gateways)
            except wire.WireError as exc:
                return Pending(d, None, (exc.code, exc.reason), [])
            if topics.gateway_of(d.topic) != rec.epoch.gateway_id:
                return Pending(d, None, ("wrong_topic", f"epoch record of {rec.epoch.gateway_id!r} came on "
                                                       f"{d.topic}"), [])
            return Pending(d, None, None, [], rec)
        try:
            b = batch.verify(d.payload, self.gateways)
        except wire.WireError as exc:
            return Pending(d, None, (exc.code, exc.reason), [])
        topic_gateway = topics.gateway_of(d.topic)
        if topic_gateway != b.gateway_id:
            return Pending(d, b, ("wrong_topic", f"batch {b.id} came on the topic of {topic_gateway!r}"), [])
        chunks = [self.verifier.submit(list(b.messages[i:i + CHUNK])) for i in range(0, len(b.messages), CHUNK)]
        return Pending(d, b, None, chunks)

    def _results(self, p: Pending) -> list[Result]:
        out: list[Result] = []
        for i, future in enumerate(p.chunks):
            out.extend(self.verifier.result(list(p.batch.messages[i * CHUNK:(i + 1) * CHUNK]), future))
        return out

    # -- store ----------------------------------------------------------------------------

    def _store(self, p: Pending) -> None:
        """Inside the caller's transaction: stored, counted as a duplicate, or rejected."""
        code_reason = p.error
        if p.epoch is not None:
            stored = self.store.add_epoch(p.epoch)
            self.counters["epochs" if stored else "duplicates"] += 1
            log.info("epoch %s/%d: %d batches, %s", p.epoch.epoch.gateway_id, p.epoch.epoch.number,
                     len(p.epoch.epoch.heads), "anchored in block %s" % p.epoch.receipt.block if stored else
                     "had it already")
            return
        readings: list[wire.Reading] = []
        if code_reason is None:
            for i, r in enumerate(self._results(p)):
                if isinstance(r, tuple):
                    code_reason = (r[0], f"batch {p.batch.id}, message {i}: {r[1]}")
                    break
                readings.append(r)
        if code_reason is None:
            try:
                if self.store.add_batch(p.batch, readings):
                    self.counters["batches"] += 1
                    self.counters["readings"] += len(readings)
                    log.info("batch %s: %d readings, %d aggregates", p.batch.id, len(readings),
                             len(p.batch.aggregates))
                else:
                    self.counters["duplicates"] += 1
                    log.info("batch %s: had it already", p.batch.id)
                return
            except StoreError as exc:
                code_reason = ("conflicting_batch", str(exc))
        code, reason = code_reason
        self.store.reject(p.delivery.topic, p.batch.gateway_id if p.batch else None, code, reason, p.delivery.payload)
        self.counters["rejected"] += 1
        self.counters[f"rejected_{code}"] += 1
        log.warning("rejected: %s from %s: %s", code, p.delivery.topic, reason)

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
        for d in items:
            self.in_flight.append(self._check(d))
        wait = not items
        ready: list[Pending] = []
        while self.in_flight and (wait or all(f.done() for f in self.in_flight[0].chunks)
                                  or len(self.in_flight) > 8):
            ready.append(self.in_flight.popleft())
            wait = False
        if not ready:
            return 0
        with self.store.transaction():
            for p in ready:
                self._store(p)
        for p in ready:  # committed: now the broker may forget them
            p.delivery.ack()
        return len(ready)

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
        try:
            while not self.stopping.is_set() and not (until and until()):
                self.step(0.2)
            while self.in_flight:
                self.step(0.0)
        finally:
            self.client.loop_stop()
            self.client.disconnect()
            self.verifier.close()
            self.store.close()

    def stop(self) -> None:
        self.stopping.set()
