"""The ingest stage: messages from the local broker's node topics (and, in serial_ingest, from serial
lines) into the gateway's inbox, each with the acknowledgement the gateway calls once it is committed."""

from __future__ import annotations

import logging
import queue
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from govedge.core import mqtt, topics
from govedge.core.config import MqttEndpoint

from .supervise import guard_callbacks

log = logging.getLogger("govedge.gateway")


@dataclass
class Inbound:
    source: str  # the MQTT topic or serial port it came from
    payload: bytes
    ack: Callable[[], None]  # tells the sender it is safe with us


class MqttIngest:
    """The local broker's node topics, persistent session, QoS 1, acked only after commit."""

    def __init__(self, ep: MqttEndpoint, inbox: "queue.Queue[Inbound]", counters: Counter,
                 on_state: Callable[[str, bool], None] = lambda state, ok: None):
        self.inbox = inbox
        self.counters = counters
        self.ep = ep
        self.on_state = on_state
        self.client = mqtt.client(ep, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        guard_callbacks(self.client, "ingest", counters)

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            log.error("ingest: broker %s:%d refused the connection: %s", self.ep.host, self.ep.port, reason)
            self.on_state(f"refused by the local broker {self.ep.host}:{self.ep.port}: {reason}", False)
            return
        client.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
        log.info("ingest: subscribed on %s:%d", self.ep.host, self.ep.port)
        self.on_state(f"subscribed on the local broker {self.ep.host}:{self.ep.port}", True)

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        log.warning("ingest: disconnected from broker %s:%d", self.ep.host, self.ep.port)
        self.on_state(f"disconnected from the local broker {self.ep.host}:{self.ep.port} ({reason}), "
                      "reconnecting", False)

    def _on_message(self, client, userdata, msg):
        self.counters["received"] += 1
        mid, qos = msg.mid, msg.qos
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload), lambda: client.ack(mid, qos) if qos else None))

    def confirm(self, committed: dict[str, list[int]]) -> None:
        """Tells each node (device id -> sequence numbers) which of its messages are committed, on the node's
        acknowledgement topic, which only it may read. QoS 0: a node that misses one (it was offline, or the
        broker lost it) sends those messages again and the repeats are acknowledged again, so QoS 1 would
        buy nothing but a PUBACK per acknowledgement for this process to read."""
        for device, seqs in committed.items():
            for payload in topics.ack_payloads(seqs):
                self.client.publish(topics.ack(device), payload, qos=0)
                self.counters["node_acks"] += 1

    def start(self):
        self.on_state(f"connecting to the local broker {self.ep.host}:{self.ep.port}", False)
        self.client.connect_async(self.ep.host, self.ep.port, self.ep.keepalive)
        self.client.loop_start()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()
