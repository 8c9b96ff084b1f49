"""The uplink stage: batches and epoch records to the hub's broker, MQTT QoS 1, kept until the hub confirms.

Batches go out after the hub's cursor, oldest first, up to WINDOW of them in
flight; the cursor moves only when the hub confirms on the gateway's own
``committed`` topic that it committed (or durably refused) them, never on the
broker's PUBACK: a broker may lose what it acknowledged. What is not confirmed
within ``[hub] confirm_timeout_s`` is sent again, and all of it after a new
connection; the hub de-duplicates (docs/FORMAT.md, "Acknowledgements between
gateway and hub"). Anchored epochs follow, the same way, once every batch in
them is confirmed. While the hub is away everything waits on disk (govedge.gateway.store).
The gateway's status record (govedge.gateway.heartbeat) goes out on each new
connection and every ``[hub] heartbeat_s`` seconds, QoS 1, kept by nobody.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Callable

import cbor2

from govedge.anchor import Receipt
from govedge.core import confirm, epoch, mqtt, topics
from govedge.core.connection import Link
from govedge.core.wire import WireError

from .config import GatewayConfig
from .store import Store
from .supervise import Backoff, guard_callbacks, run_supervised

log = logging.getLogger("govedge.gateway")

WINDOW = 16  # batches in flight, unconfirmed: the hub's round trip is not paid once per batch
EPOCH_WINDOW = 4


class HubUplink(threading.Thread):
    """Sends batches after the hub's cursor, oldest first, QoS 1; the cursor moves on the hub's confirmation."""

    DESTINATION = "hub"
    EPOCHS = "hub-epochs"

    def __init__(self, cfg: GatewayConfig, db_path, counters: Counter, wake: threading.Event, key=None,
                 on_state: Callable[..., None] = lambda state, ok, failure=None: None, heartbeats=None):
        """``on_state(state, ok, failure)``: the connection's state in words, as govedge.core.connection's
        Link tells it (``failure``: its cause, or None). ``heartbeats``: a govedge.gateway.heartbeat.Heartbeats,
        whose records go out (None: none)."""
        super().__init__(name="uplink", daemon=True)
        self.heartbeats = heartbeats if heartbeats is not None and heartbeats.enabled else None
        self.heartbeat_due = 0.0  # monotonic; 0: at once (a new connection)
        self.status_topic = (cfg.hub_topic[:-len("batch")] + "status" if cfg.hub_topic.endswith("/batch")
                             else topics.gateway_status(cfg.gateway_id))
        self.on_state = on_state
        self.link = Link("uplink", f"the hub broker {cfg.hub.host}:{cfg.hub.port}", "[hub]", log, on_state,
                         waiting="; batches wait on disk, trying again with growing pauses")
        self.key = key  # signs the epoch records
        self.epoch_topic = (cfg.hub_topic[:-len("batch")] + "epoch" if cfg.hub_topic.endswith("/batch")
                            else topics.epoch(cfg.gateway_id))
        self.cfg = cfg
        self.db_path = db_path
        self.counters = counters
        self.wake = wake
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.listening = threading.Event()  # subscribed to the hub's confirmations on this connection
        self.connections = 0  # subscriptions so far: a new one means a new connection
        self.store_id: str | None = None  # the store's (set when the uplink opens it)
        self.confirmations: "queue.Queue[confirm.Confirmation]" = queue.Queue()
        self.committed_topic = topics.committed(cfg.gateway_id)
        self.sent: dict[tuple[str, int], float] = {}  # (kind, number) in flight -> when it went out (monotonic)
        self.confirmed: dict[tuple[str, int], confirm.Confirmation] = {}  # in flight and confirmed, not yet passed
        self.state = "starting"
        self.client = mqtt.client(cfg.hub, clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self.link.on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        guard_callbacks(self.client, "uplink", counters)
        self.backoff = Backoff()  # pauses between restarts after an unexpected exception (govedge.gateway.supervise)

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            self.state = f"refused by hub broker: {reason}"
            self.link.refused(reason)
            return
        self.state = "connected"
        self.connected.set()
        client.subscribe(self.committed_topic, qos=1)  # a clean session: asked again on every connection
        self.link.connected(f"connected to {self.link.broker}")

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        if any(r.is_failure for r in reasons):
            self.state = f"the hub broker refused the subscription to {self.committed_topic}"
            log.error("uplink: the hub broker refused the subscription to %s (%s): nothing can be confirmed; check "
                      "the broker's ACL (the gateway reads its own committed topic)", self.committed_topic,
                      ", ".join(str(r) for r in reasons))
            self.on_state(f"PROBLEM: the hub broker refused the subscription to {self.committed_topic}: "
                          "batches go out but are never confirmed (check the hub broker's ACL)", False)
            return
        self.connections += 1
        self.listening.set()
        self.wake.set()

    def _on_message(self, client, userdata, msg):
        if msg.topic != self.committed_topic:
            return
        try:
            self.confirmations.put(confirm.loads(bytes(msg.payload)))
        except WireError as exc:
            log.error("uplink: a confirmation on %s that does not read (%s: %s); ignored", msg.topic, exc.code,
                      exc.reason)
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.listening.clear()
        self.connected.clear()
        self.state = "disconnected"
        self.link.disconnected(reason)

    def run(self):
        """The uplink under supervision: an unexpected exception restarts it (govedge.gateway.supervise)."""
        run_supervised("uplink", self._run, self.stopping, self.counters,
                       lambda state, ok: self._tell_down(state), self.backoff)

    def _tell_down(self, state: str) -> None:
        self.state = state
        self.on_state(state, False)

    def _run(self):
        store = Store(self.db_path, self.cfg.synchronous)
        self.store_id = store.store_id
        self.sent.clear()  # a restart after a fault: everything unconfirmed goes out again
        gap = 1.0 / self.cfg.uplink_rate_per_s if self.cfg.uplink_rate_per_s > 0 else 0.0
        try:
            self.link.connecting()
            self.client.connect_async(self.cfg.hub.host, self.cfg.hub.port, self.cfg.hub.keepalive)
            self.client.loop_start()
            seen = 0
            while not self.stopping.is_set():
                if not self.listening.wait(0.5):
                    continue
                if seen != self.connections:  # a new connection: whatever was in flight goes out again
                    seen = self.connections
                    self.sent.clear()
                    self.heartbeat_due = 0.0  # and the hub hears of this gateway at once
                self.wake.clear()
                self._take_confirmations()
                if self.heartbeats is not None and time.monotonic() >= self.heartbeat_due:
                    self._send_heartbeat(store)
                pending = store.batches_after(store.cursor(self.DESTINATION), WINDOW)
                pending = self._pass_confirmed(store, self.DESTINATION, "batch", [b.seq for b in pending], pending)
                for b in pending:
                    if not self._due(("batch", b.seq)):
                        continue
                    if not self._publish(self.cfg.hub_topic, b.cose, ("batch", b.seq)):
                        break  # the hub is away; the batch stays after the cursor
                    if gap:
                        time.sleep(gap)  # the backlog after an outage goes out under the rate cap
                self._send_epochs(store, store.cursor(self.DESTINATION))
                self.wake.wait(self._next_due())
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.connected.clear()  # told to metrics as not connected until the next connection
            store.close()

    def _publish(self, topic: str, payload: bytes, item: tuple[str, int]) -> bool:
        """QoS 1, not waiting for the PUBACK (the hub's confirmation is what counts); False when there is no
        connection to hand it to."""
        if not self.listening.is_set():
            return False
        if item in self.sent:
            self.counters["sent_again"] += 1
            log.warning("uplink: %s %d not confirmed by the hub within %g s; sending it again", item[0], item[1],
                        self.cfg.hub_confirm_timeout_s)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != 0:
            return False
        self.sent[item] = time.monotonic()
        return True

    def _send_heartbeat(self, store: Store) -> None:
        """The gateway's status record to the hub; a record that cannot be built is logged and counted, and the
        batches go on (the next one is due a heartbeat later all the same)."""
        self.heartbeat_due = time.monotonic() + self.heartbeats.interval_s
        try:
            record = self.heartbeats.record(store)
        except Exception as exc:  # noqa: BLE001 - the heartbeat never stops the batches
            self.counters["heartbeat_faults"] += 1
            log.error("uplink: the status record could not be built (%s: %s); the next in %g s", type(exc).__name__,
                      exc, self.heartbeats.interval_s)
            return
        if self.client.publish(self.status_topic, record, qos=1).rc == 0:
            self.counters["heartbeats"] += 1

    def _due(self, item: tuple[str, int]) -> bool:
        """Not in flight, or in flight unconfirmed for longer than the timeout."""
        sent = self.sent.get(item)
        return sent is None or (item not in self.confirmed
                                and time.monotonic() - sent >= self.cfg.hub_confirm_timeout_s)

    def _next_due(self) -> float:
        """How long until an item in flight is due again (at most half a second: new batches are looked for)."""
        waiting = [t for item, t in self.sent.items() if item not in self.confirmed]
        if not waiting:
            return 0.5
        return max(0.0, min(0.5, min(waiting) + self.cfg.hub_confirm_timeout_s - time.monotonic()))

    def _take_confirmations(self) -> None:
        """The hub's confirmations that arrived, of this store's items (or items from before store ids)."""
        while True:
            try:
                c = self.confirmations.get_nowait()
            except queue.Empty:
                return
            if c.store_id not in (None, self.store_id):
                continue  # an item of a store this gateway had before (a replaced SD card): not in flight here
            if c.outcome in ("rejected", "waiting"):
                log.warning("uplink: the hub %s %s (%s)", "refused" if c.outcome == "rejected" else "holds",
                            c.what, c.code)
            self.confirmed[(c.kind, c.number)] = c

    def _pass_confirmed(self, store: Store, destination: str, kind: str, numbers: list[int], items: list) -> list:
        """Moves the destination's cursor past the confirmed items at the head of ``items`` (in order, numbered
        ``numbers``): every item up to the cursor is confirmed. Returns the items after it."""
        # behind the cursor: confirmed again after it passed (a delivery again), or dropped by the quota unconfirmed
        for stale in [k for k in {*self.confirmed, *self.sent} if k[0] == kind and (not numbers or k[1] < numbers[0])]:
            self.confirmed.pop(stale, None)
            self.sent.pop(stale, None)
        done = 0
        while done < len(numbers) and (kind, numbers[done]) in self.confirmed:
            done += 1
        if not done:
            return items
        with store:
            store.advance(destination, numbers[done - 1])
        for n in numbers[:done]:
            self.confirmed.pop((kind, n), None)
            self.sent.pop((kind, n), None)
        self.counters["batches_delivered" if kind == "batch" else "epochs_delivered"] += done
        return items[done:]

    def _send_epochs(self, store: Store, batches_confirmed: int) -> None:
        """Anchored epochs to the hub once the hub confirmed every batch in them (up to ``batches_confirmed``),
        kept until the hub confirms them too."""
        pending = [e for e in store.confirmed_epochs_after(store.cursor(self.EPOCHS), EPOCH_WINDOW)
                   if e.last_batch <= batches_confirmed]
        pending = self._pass_confirmed(store, self.EPOCHS, "epoch", [e.number for e in pending], pending)
        for e in pending:
            if not self._due(("epoch", e.number)):
                continue
            closed = epoch.Epoch(self.cfg.gateway_id, e.number, tuple(cbor2.loads(e.heads)), self.store_id)
            record = epoch.sign_epoch(self.key, closed, e.first_batch, e.last_batch, Receipt.loads(e.receipt))
            if not self._publish(self.epoch_topic, record, ("epoch", e.number)):
                return

    def stop(self):
        self.stopping.set()
        self.wake.set()
