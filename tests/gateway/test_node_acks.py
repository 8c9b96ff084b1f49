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
    the gateway's store held at that moment (what it says is committed must be committed)."""

    def __init__(self, port: int, device: str, db_path):
        self.acks: "queue.Queue[tuple[set[int], set[int], int]]" = queue.Queue()
        self.db_path = db_path
        self.device = device
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
            kept = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        named = {seq for first, last in topics.acked(msg.payload) for seq in range(first, last + 1)}
        self.acks.put((named, stored, kept))

    def until(self, seqs: set[int], timeout: float = 10) -> set[int]:
        """Every number acknowledged until ``seqs`` all were; each must have been committed by then."""
        seen: set[int] = set()
        while not seqs <= seen:
            named, stored, kept = self.acks.get(timeout=timeout)
            # what is not a stored reading must be one of the rows of the quarantine (which keep no number)
            assert len(named - stored) <= kept, f"acknowledged {sorted(named - stored)} before they were committed"
            seen |= named
        return seen

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_a_node_is_told_each_committed_number_only_after_the_commit(running):
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        publish(r.local.port, [(topics.reading(device), r.world.message(device)) for _ in range(20)])
        assert node.until(set(range(20))) == set(range(20))
        assert r.gw.counters["node_acks"] >= 1
    finally:
        node.close()


def test_messages_a_broker_lost_are_never_covered_by_a_later_acknowledgement(running):
    # a broker without the gateway's session (after a power cut) took #0..#4 and dropped them; #5 arrives
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        lost = [r.world.message(device) for _ in range(5)]
        publish(r.local.port, [(topics.reading(device), r.world.message(device))])
        assert node.until({5}) == {5}
        publish(r.local.port, [(topics.reading(device), m) for m in lost])  # the node sends them again
        assert node.until(set(range(5))) == set(range(5))
    finally:
        node.close()


def test_a_repeat_is_acknowledged_again_and_stored_once(running):
    r = running()
    device = r.world.devices[0]
    node = AckListener(r.local.port, device, r.gw.db_path)
    try:
        first = r.world.message(device)
        publish(r.local.port, [(topics.reading(device), first)])
        assert node.until({0}) == {0}
        # the node missed that acknowledgement (it was offline) and sends the message again
        publish(r.local.port, [(topics.reading(device), first)])
        assert node.until({0}) == {0}
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
        # kept whole in the quarantine: the node need not send it again
        assert node.until({0, 1}) == {0, 1}
        assert r.gw.counters["quarantined"] == 1
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
        assert node.until({3}) == {3}
        wait_until(lambda: r.gw.counters["quarantined"] == 1, what="the other device's message refused")
    finally:
        node.close()


def test_acknowledgements_name_ranges_and_split_to_fit_a_nodes_memory():
    seqs = list(range(0, 4000, 2)) + [4001, 4002, 4003]
    payloads = topics.ack_payloads(seqs)
    assert all(len(p) <= topics.ACK_PAYLOAD_BYTES for p in payloads)
    assert [s for p in payloads for a, b in topics.acked(p) for s in range(a, b + 1)] == sorted(seqs)
    assert topics.ack_payloads([7, 3, 4, 5, 7]) == [b"3-5,7"]
