"""Acknowledgements between node and gateway (docs/FORMAT.md): a node learns on its own topic which of its
messages the gateway has committed, and only then forgets them.

The gateway is the real service with real brokers (support.rig); the node's side here is a paho client
subscribed to the node's acknowledgement topic, as the firmware subscribes (tests/firmware hold the node).
"""

from __future__ import annotations

import queue
import sqlite3

import paho.mqtt.client as paho

from govedge.core import topics
from support import wait_until
from support.hubkit import publish
from support.rig import running  # noqa: F401 - the fixture


class AckListener:
    """A node's view of its acknowledgement topic; at each acknowledgement, which of the node's messages
    the gateway's store held at that moment (what it says committed must be committed)."""

    def __init__(self, port: int, device: str, db_path):
        self.acks: "queue.Queue[tuple[int, set[int]]]" = queue.Queue()
        self.db_path = db_path
        self.device = device
        self.sent: set[int] = set()  # the sequence numbers the test published as this node
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"node-{device}")
        subscribed = []
        self.client.on_subscribe = lambda *a: subscribed.append(True)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topics.ack(device), qos=1)
        wait_until(lambda: subscribed, what="subscribed to the acknowledgement topic")

    def _on_message(self, client, userdata, msg):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            stored = {seq for (seq,) in db.execute("SELECT seq FROM readings WHERE device_id = ?", (self.device,))}
        self.acks.put((int(msg.payload.decode("ascii")), stored))

    def next(self, timeout: float = 10) -> tuple[int, set[int]]:
        return self.acks.get(timeout=timeout)

    def all_until(self, seq: int, timeout: float = 10) -> list[int]:
        """Every acknowledgement until one covers ``seq``; each must cover only what the store held."""
        seen = []
        while not seen or seen[-1] < seq:
            ack, stored = self.next(timeout)
            assert set(range(ack + 1)) & self.sent <= stored, f"acknowledged #{ack} before it was committed"
            seen.append(ack)
        return seen

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_a_node_is_told_the_highest_committed_number_only_after_the_commit(running):
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        messages = [r.world.message(device) for _ in range(20)]
        node.sent = set(range(20))
        publish(r.local.port, [(topics.reading(device), m) for m in messages])
        acks = node.all_until(19)
        assert acks == sorted(acks)
        assert r.gw.counters["node_acks"] >= 1
    finally:
        node.close()


def test_a_repeat_is_acknowledged_again_and_stored_once(running):
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        first = r.world.message(device)
        node.sent = {0}
        publish(r.local.port, [(topics.reading(device), first)])
        assert node.all_until(0) == [0]
        # the node missed that acknowledgement (it was offline) and sends the message again
        publish(r.local.port, [(topics.reading(device), first)])
        assert node.all_until(0) == [0]
        wait_until(lambda: r.gw.counters["duplicates"] == 1, what="the repeat recognised")
        assert r.gw.store.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1
    finally:
        node.close()


def test_a_refused_message_is_acknowledged_by_its_own_number_once_it_is_kept_in_the_quarantine(running):
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        good = r.world.message(device)
        forged = bytearray(r.world.message(device))
        forged[-1] ^= 1  # the signature no longer verifies
        publish(r.local.port, [(topics.reading(device), good), (topics.reading(device), bytes(forged))])
        wait_until(lambda: r.gw.counters["quarantined"] == 1, what="the forgery quarantined")
        acks = []
        while not acks or acks[-1] < 1:
            acks.append(node.next()[0])
        assert acks[-1] == 1  # kept whole in the quarantine: the node need not send it again
    finally:
        node.close()


def test_no_node_is_told_about_another_nodes_messages(running):
    r = running()
    mine, other = r.world.devices[:2]
    node = AckListener(r.local.port, mine, r.gw.db_path)
    try:
        # the other device's signed message on this device's topic: refused, and this node learns nothing of it
        publish(r.local.port, [(topics.reading(mine), r.world.message(other, seq=7)),
                               (topics.reading(mine), r.world.message(mine, seq=3))])
        ack, _ = node.next()
        assert ack == 3
        wait_until(lambda: r.gw.counters["quarantined"] == 1, what="the other device's message refused")
    finally:
        node.close()
