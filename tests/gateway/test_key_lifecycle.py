"""Keys with boundaries at the gateway, tried as someone holding a device's old or leaked key would:
a retired key signs nothing made after the rotation, a revoked one nothing after --since, and one
reading with a huge sequence number locks nobody out (docs/SECURITY.md, "Key lifecycle")."""

from __future__ import annotations

import time

from govedge.core import topics
from govedge.core.registry import Registry
from support import firmware, revoke, scalar, sec1
from support.hubkit import World

from test_gateway_isolation import Acks, drain_all, make_gateway, rows

DEVICE = "esp32-0001"
OLD, NEW = DEVICE, "esp32-0001 second key"  # the labels of the device's keys (World signs with scalar(DEVICE))


def signed(key_label: str, seq: int, t: float | None) -> bytes:
    return firmware("reading").signed_reading(scalar(key_label), DEVICE, seq, None if t is None else int(t),
                                              [("temp", "Cel", 2150)])


def rotate(world: World, label: str = NEW) -> None:
    registry = Registry.load(world.folder / "registry.json")
    registry.rotate(DEVICE, sec1(scalar(label)))
    registry.save()


def after_rotation(tmp_path):
    """A device whose key was rotated a second ago, and a gateway that has it in its registry."""
    world = World(tmp_path / "w", devices=1)
    rotate(world)
    return world, time.time() - 1, make_gateway(tmp_path / "gw", world), Acks()


def send(gw, acks: Acks, *messages: bytes) -> None:
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), m) for m in messages])


def stored(gw) -> list[int]:
    return [s for (s,) in rows(gw, f"SELECT seq FROM readings WHERE device_id = '{DEVICE}' ORDER BY seq")]


def refusals(gw) -> list[str]:
    return [c for (c,) in rows(gw, "SELECT code FROM quarantine ORDER BY id")]


def test_a_retired_key_signs_nothing_timed_after_the_rotation_but_what_it_made_before_passes(tmp_path):
    world, rotated, gw, acks = after_rotation(tmp_path)
    send(gw, acks, signed(OLD, 10, rotated - 3600),  # made before the rotation, delivered late: kept
         signed(OLD, 11, rotated + 30))  # the old key, timed after the rotation: the smallest forgery
    assert stored(gw) == [10]
    assert refusals(gw) == ["retired_key"]
    [(reason,)] = rows(gw, "SELECT reason FROM quarantine")
    assert "is signed by the retired key" in reason and "is not before the key was retired" in reason
    assert len(acks.acked) == 2


def test_the_first_reading_under_the_new_key_bounds_the_old_key_by_sequence_number_even_without_a_clock(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    send(gw, acks, signed(OLD, 1, None))
    rotate(world)
    gw = make_gateway(tmp_path / "gw", world)  # the registry as it is now (a reload does the same)
    send(gw, acks, signed(OLD, 2, None),  # the old key, no time, before the new key spoke: a late reading
         signed(NEW, 5, None),  # the node under its new key: the boundary is 5
         signed(OLD, 4, None),  # made before the rotation, delivered late: below the boundary
         signed(OLD, 6, None))  # a leaked old key's reading without a time: at or above the boundary
    assert stored(gw) == [1, 2, 4, 5]
    assert refusals(gw) == ["retired_key"]
    assert rows(gw, "SELECT key_id, valid_below_seq FROM key_bounds") == [(sec1(scalar(OLD)).hex()[2:18], 5)]
    gw.store.close()
    gw = make_gateway(tmp_path / "gw", world)  # the boundary is kept across a restart
    send(gw, acks, signed(OLD, 7, None))
    assert refusals(gw) == ["retired_key", "retired_key"]


def test_one_reading_with_the_largest_sequence_number_locks_nobody_out(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    now = time.time()
    send(gw, acks, signed(OLD, 3, now), signed(OLD, 2**63 - 1, now), signed(OLD, 4, now))
    assert stored(gw) == [3, 4]
    assert refusals(gw) == ["seq_jump"]
    # the leaked key's largest allowed jump locks out only that key: the rotation recovers the device
    send(gw, acks, signed(OLD, 4 + 2**32, now - 5))
    send(gw, acks, signed(OLD, 5, now))
    assert refusals(gw) == ["seq_jump", "replayed"]
    rotate(world)
    gw = make_gateway(tmp_path / "gw", world)
    send(gw, acks, signed(NEW, 5, time.time()), signed(NEW, 6, time.time()))
    assert stored(gw) == [3, 4, 5, 6, 4 + 2**32]


def test_a_node_replaying_its_full_flash_buffer_after_an_outage_is_never_refused(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    send(gw, acks, signed(OLD, 0, time.time() - 10 * 86400))
    # ten days away, one reading every 10 s, a buffer of 256: the first ones dropped, seq blocks at reboots
    first = 86400 - 256
    buffered = [signed(OLD, first + i * (1 if i < 200 else 997), time.time() - 300 + i) for i in range(256)]
    send(gw, acks, *buffered)
    assert refusals(gw) == [] and len(stored(gw)) == 257
    send(gw, acks, *buffered[-3:])  # the last ones again, after a lost acknowledgement: duplicates
    assert refusals(gw) == [] and gw.counters["duplicates"] == 3


def test_a_revoked_key_signs_nothing_after_since_nor_anything_without_a_time(tmp_path):
    world = World(tmp_path / "w", devices=1)
    since = time.time() - 3600
    revoke(world.folder / "registry.json", DEVICE, since)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    send(gw, acks, signed(OLD, 1, since - 60), signed(OLD, 2, since + 60), signed(OLD, 3, None))
    assert stored(gw) == [1]
    assert refusals(gw) == ["revoked_key", "revoked_key"]
    assert Registry.load(world.folder / "registry.json").devices[DEVICE].keys[0].status == "revoked"


def test_a_retired_key_that_leaks_later_is_revoked_by_its_id_and_keeps_the_earlier_end(tmp_path):
    world = World(tmp_path / "w", devices=1)
    rotate(world)
    rotated = time.time() - 1
    registry = Registry.load(world.folder / "registry.json")
    old = next(k for k in registry.devices[DEVICE].keys if k.status == "retired")
    later = rotated + 7200  # the leak is noticed after the rotation: --since lies after the retirement
    revoked = revoke(world.folder / "registry.json", DEVICE, later, key=old.key_id)
    registry = Registry.load(world.folder / "registry.json")
    assert revoked.key_id == old.key_id and sorted(k.status for k in registry.devices[DEVICE].keys) == ["active", "revoked"]
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    send(gw, acks, signed(OLD, 10, rotated - 3600),  # made before the rotation: still kept
         signed(OLD, 11, rotated + 60),  # after the rotation, before --since: the retirement still ends it
         signed(OLD, 12, None),  # untimed: a revoked key signs nothing without a time
         signed(NEW, 13, time.time()))  # the active key is untouched
    assert stored(gw) == [10, 13]
    assert refusals(gw) == ["revoked_key", "revoked_key"]


def test_revoking_a_key_the_device_does_not_have_names_the_keys_it_has(tmp_path):
    import pytest

    from govedge.core.registry import RegistryError

    world = World(tmp_path / "w", devices=1)
    registry = Registry.load(world.folder / "registry.json")
    with pytest.raises(RegistryError, match=r"has no key 'ffffffffffffffff'; its keys: [0-9a-f]{16} \(active\)"):
        registry.revoke(DEVICE, key="ffffffffffffffff")


def test_a_number_another_key_of_the_device_signed_is_a_conflicting_reading_not_an_internal_error(tmp_path):
    world, rotated, gw, acks = after_rotation(tmp_path)
    send(gw, acks, signed(OLD, 50, rotated - 600),  # the old key's, made before the rotation: kept
         signed(NEW, 50, time.time()),  # the new key's count runs on its own, but 50 is the device's already
         signed(NEW, 51, time.time()))
    assert stored(gw) == [50, 51]
    assert refusals(gw) == ["conflicting_reading"]
    [(reason,)] = rows(gw, "SELECT reason FROM quarantine")
    assert reason == f"sequence number 50 of '{DEVICE}' is taken by a reading another of its keys signed; the first is kept"
    assert len(acks.acked) == 3
