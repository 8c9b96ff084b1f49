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
from govedge.core.connection import Cause, Link

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
                 on_state: Callable[..., None] = lambda state, ok, failure=None: None):
        """``on_state(state, ok, failure)``: the connection's state in words, as govedge.core.connection's
        Link tells it (``failure``: its cause, or None)."""
        self.inbox = inbox
        self.counters = counters
        self.ep = ep
        self.on_state = on_state
        self.link = Link("ingest", f"the local broker {ep.host}:{ep.port}", "[ingest.mqtt]", log, on_state,
                         waiting="; the nodes keep their readings meanwhile")
        self.client = mqtt.client(ep, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self.link.on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        guard_callbacks(self.client, "ingest", counters)

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            self.link.refused(reason)
            return
        # up once the broker has granted the subscriptions (_on_subscribe): a message published before that
        # would not reach a session made on this connection
        client.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        refused = [f"{topic} ({reason})" for topic, reason in zip((topics.ALL_READINGS, topics.ALL_STATUS), reasons)
                   if reason.is_failure]
        if refused:
            self.link.failed(Cause("not_authorized", f"{self.link.broker} refused the subscription to "
                                   f"{', '.join(refused)}: no node's message reaches the gateway",
                                   "check the local broker's ACL: the gateway's login reads "
                                   f"{topics.ALL_READINGS} and {topics.ALL_STATUS}"))
            return
        self.link.connected(f"subscribed on {self.link.broker}")

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.link.disconnected(reason)

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
        self.link.connecting()
        self.client.connect_async(self.ep.host, self.ep.port, self.ep.keepalive)
        self.client.loop_start()

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()
