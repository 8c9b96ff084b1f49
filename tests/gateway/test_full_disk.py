"""A full disk never ends the gateway and never loses what it held: a commit that fails is rolled back,
its messages are not acknowledged and are committed once there is room again; below its reserve of free
space the gateway stops acknowledging before SQLite hits the wall, says why in status and metrics, frees
what the quota may free, and goes on by itself once space returns.

The first test is the smallest fault: one commit failing with SQLITE_FULL, on the real service object fed
through its inbox (as test_gateway_isolation). The others fill a small real file system (a tmpfs of a few
MB, mounted by the test: it needs root) under the running gateway, with real brokers and signed readings.
"""

from __future__ import annotations

import sqlite3

from govedge.core import topics
from govedge.gateway import store as gwstore
from support.hubkit import World
from test_gateway_isolation import Acks, make_gateway, rows

FULL = "database or disk is full"


def test_a_commit_failing_with_sqlite_full_acknowledges_nothing_and_commits_the_messages_later(tmp_path):
    world = World(tmp_path / "world", devices=2)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    a, b = world.devices
    messages = [(a, world.message(a)), (b, world.message(b)), (a, world.message(a)), (b, world.message(b))]
    original = gwstore.Store.add_reading
    full = {"on": True, "failed": 0}

    def disk_full(self, device_id, *args):  # the disk fills under the second message of the commit
        if full["on"] and device_id == b:
            full["failed"] += 1
            raise sqlite3.OperationalError(FULL)
        return original(self, device_id, *args)

    gwstore.Store.add_reading = disk_full
    try:
        for d, m in messages:
            gw.inbox.put(acks.inbound(topics.reading(d), m))
        for _ in range(5):  # the gateway goes on: each pass tries again, nothing raises
            gw.drain(0.0)
        assert full["failed"] >= 1
        assert acks.acked == []  # nothing acknowledged, neither the message that failed nor those with it
        assert rows(gw, "SELECT count(*) FROM readings") == [(0,)]  # rolled back whole
        assert rows(gw, "SELECT count(*) FROM quarantine") == [(0,)]  # a full disk is no fault of a message
        full["on"] = False  # space returns
        gw.room.retry_s = 0.0
        for _ in range(5):
            gw.drain(0.0)
    finally:
        gwstore.Store.add_reading = original
    assert sorted(acks.acked) == sorted(m for _, m in messages)  # each acknowledged once, after its commit
    assert sorted(rows(gw, "SELECT device_id, seq FROM readings")) == [(a, 0), (a, 1), (b, 0), (b, 1)]
    assert rows(gw, "SELECT count(*) FROM quarantine") == [(0,)]
    assert gw.batcher.waiting == 4
