"""The uplink stage: batches and epoch records to the hub's broker, MQTT QoS 1.

Batches go out after the hub's cursor, oldest first, and the cursor moves when
the hub's broker acknowledges one; anchored epochs follow once every batch went.
While the hub is away everything waits on disk (govedge.gateway.store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

import cbor2

from govedge.anchor import Receipt
from govedge.core import epoch, mqtt, topics

from .config import GatewayConfig
from .store import Store
from .supervise import Backoff, guard_callbacks, run_supervised

log = logging.getLogger("govedge.gateway")


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
        guard_callbacks(self.client, "uplink", counters)
        self.backoff = Backoff()  # pauses between restarts after an unexpected exception (govedge.gateway.supervise)

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
        self.wake.set()
        log.info("uplink: connected to hub %s", hub)
        self.on_state(f"connected to the hub broker {hub}", True)

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        if self.connected.is_set():
            log.warning("uplink: lost the hub %s:%d (%s)", self.cfg.hub.host, self.cfg.hub.port, reason)
        self.connected.clear()
        self.state = "disconnected"
        self.on_state(f"no connection to the hub broker {self.cfg.hub.host}:{self.cfg.hub.port} ({reason}); "
                      "batches wait on disk, trying again with growing pauses", False)

    def run(self):
        """The uplink under supervision: an unexpected exception restarts it (govedge.gateway.supervise)."""
        run_supervised("uplink", self._run, self.stopping, self.counters,
                       lambda state, ok: self._tell_down(state), self.backoff)

    def _tell_down(self, state: str) -> None:
        self.state = state
        self.on_state(state, False)

    def _run(self):
        store = Store(self.db_path, self.cfg.synchronous)
        gap = 1.0 / self.cfg.uplink_rate_per_s if self.cfg.uplink_rate_per_s > 0 else 0.0
        try:
            self.on_state(f"connecting to the hub broker {self.cfg.hub.host}:{self.cfg.hub.port}", False)
            self.client.connect_async(self.cfg.hub.host, self.cfg.hub.port, self.cfg.hub.keepalive)
            self.client.loop_start()
            while not self.stopping.is_set():
                if not self.connected.wait(0.5):
                    continue
                pending = store.batches_after(store.cursor(self.DESTINATION), 16)
                if not pending:
                    if not self._send_epochs(store):
                        self.wake.wait(0.5)
                        self.wake.clear()
                    continue
                for b in pending:
                    if not self._publish(self.cfg.hub_topic, b.cose):
                        break  # the hub is away; the batch stays after the cursor
                    with store:
                        store.advance(self.DESTINATION, b.seq)
                    self.counters["batches_delivered"] += 1
                    if gap:
                        time.sleep(gap)  # the backlog after an outage goes out under the rate cap
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.connected.clear()  # told to metrics as not connected until the next connection
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
        for e in store.confirmed_epochs_after(store.cursor(self.EPOCHS), 4):
            closed = epoch.Epoch(self.cfg.gateway_id, e.number, tuple(cbor2.loads(e.heads)))
            record = epoch.sign_epoch(self.key, closed, e.first_batch, e.last_batch, Receipt.loads(e.receipt))
            if not self._publish(self.epoch_topic, record):
                return sent
            with store:
                store.advance(self.EPOCHS, e.number)
            self.counters["epochs_delivered"] += 1
            sent = True
        return sent

    def stop(self):
        self.stopping.set()
        self.wake.set()
