"""Keys with boundaries at the hub, tried as someone holding an old or leaked key would: device keys
(retired, revoked; stored readings flagged) and gateway keys (`hub add-gateway` rotation, revoke-gateway).
The hub is the real service object on a SQLite store, fed here as its broker would (docs/SECURITY.md,
"Key lifecycle")."""

from __future__ import annotations

import sqlite3
import time

from govedge.core import topics
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub.gateways import Gateways
from govedge.hub.service import Delivery, HubService
from support import firmware, private_key, revoke, scalar, sec1
from support.hubkit import GATEWAY, World

DEVICE = "esp32-0001"


def signed(key_label: str, seq: int, t: float | None) -> bytes:
    return firmware("reading").signed_reading(scalar(key_label), DEVICE, seq, None if t is None else int(t),
                                              [("temp", "Cel", 2150)])


def run(world: World, *batches: bytes) -> list[int]:
    hub = HubService(hubconfig.load(world.hub_toml(1883, workers=0)))
    acks: list[int] = []
    try:
        for i, b in enumerate(batches):
            hub.inbox.put(Delivery(topics.batch(GATEWAY), b, lambda i=i: acks.append(i)))
        while len(acks) < len(batches):
            hub.step(0)
    finally:
        hub.verifier.close()
        hub.store.close()
        hub.guard.close()
    return acks


def query(world: World, sql: str) -> list:
    if world.store_url.startswith("postgresql://"):
        from test_hub_hostile import query as store_query

        return store_query(world.store_url, sql)
    db = sqlite3.connect(world.store_url)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_retired_device_key_signs_nothing_after_the_rotation_at_the_hub(tmp_path):
    world = World(tmp_path / "w", devices=1)
    registry = Registry.load(world.folder / "registry.json")
    registry.rotate(DEVICE, sec1(scalar("new")))
    registry.save()
    now = time.time()
    run(world, world.batch(0, [signed(DEVICE, 1, now - 3600),  # before the rotation: kept
                               signed("new", 5, now),  # the new key: the boundary is 5
                               signed(DEVICE, 6, None),  # the old key above the boundary, no time
                               signed(DEVICE, 7, now + 10)]))  # the old key after the rotation
    assert query(world, "SELECT seq FROM readings ORDER BY seq") == [(1,), (5,)]
    assert query(world, "SELECT code, seq FROM rejected ORDER BY seq") == [("retired_key", 6), ("retired_key", 7)]
    assert query(world, "SELECT valid_below_seq FROM key_bounds") == [(5,)]


def test_a_revoked_device_key_is_refused_after_since_and_what_the_hub_stored_from_then_on_is_flagged(tmp_path):
    world = World(tmp_path / "w", devices=1)
    since = time.time() - 600
    run(world, world.batch(0, [signed(DEVICE, 1, since - 60), signed(DEVICE, 2, since + 60),
                               signed(DEVICE, 3, None)]))
    revoke(world.folder / "registry.json", DEVICE, since)
    run(world, world.batch(1, [signed(DEVICE, 4, since - 30), signed(DEVICE, 5, since + 120),
                               signed(DEVICE, 6, None)]))
    assert query(world, "SELECT seq, flag FROM readings ORDER BY seq") == [
        (1, None), (2, "revoked_key"), (3, "revoked_key"), (4, None)]
    assert query(world, "SELECT code, seq FROM rejected ORDER BY seq") == [("revoked_key", 5), ("revoked_key", 6)]


def test_a_gateway_key_rotation_bounds_the_old_key_by_batch_number_and_time(tmp_path):
    world = World(tmp_path / "w", devices=1)
    old = world.gateway_key
    new = private_key(scalar("gateway second key"))
    gateways = Gateways.load(world.folder / "gateways.json")
    assert gateways.add(GATEWAY, new.public_key()) == "key added"
    gateways.save()
    now = int(time.time())
    late_old = world.batch(3, [signed(DEVICE, 3, None)], key=old)  # created before the rotation (t0 + 103)
    first_new = world.batch(5, [signed(DEVICE, 5, None)], key=new)
    above = world.batch(6, [signed(DEVICE, 6, None)], key=old)  # an old-key batch numbered above the new one
    from govedge.core import batch as corebatch
    after, _ = corebatch.sign(old, GATEWAY, 7, now + 5, [signed(DEVICE, 7, None)], [], "raw")  # timed after
    assert run(world, late_old, first_new, above, after) == [0, 1, 2, 3]
    assert query(world, "SELECT seq FROM batches ORDER BY seq") == [(3,), (5,)]
    assert [c for (c,) in query(world, "SELECT code FROM rejected ORDER BY id")] == ["retired_key", "retired_key"]


def test_a_revoked_gateway_key_signs_no_batch_created_after_since(tmp_path):
    world = World(tmp_path / "w", devices=1)
    since = time.time() - 600
    revoke(world.folder / "gateways.json", GATEWAY, since)
    from govedge.core import batch as corebatch
    before, _ = corebatch.sign(world.gateway_key, GATEWAY, 1, int(since) - 60, [signed(DEVICE, 1, None)], [], "raw")
    after, _ = corebatch.sign(world.gateway_key, GATEWAY, 2, int(since) + 60, [signed(DEVICE, 2, None)], [], "raw")
    run(world, before, after)
    assert query(world, "SELECT seq FROM batches") == [(1,)]
    assert query(world, "SELECT code FROM rejected") == [("revoked_key",)]
