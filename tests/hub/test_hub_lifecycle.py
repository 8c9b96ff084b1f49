"""The key lifecycle at the hub, past the first check: device messages refused as ``unknown_device`` stored once
their device is provisioned (with a proof that verifies), epoch records under the gateway key rule, and
`govedge hub proof` naming a reading's flag. The hub is the real service object on a SQLite store, fed as its
broker would (docs/SECURITY.md, "Key lifecycle")."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from govedge.anchor import Receipt
from govedge.core import batch, proof, topics
from govedge.core.epoch import Epoch, head_of, sign_epoch
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub.gateways import Gateways
from govedge.hub.proofs import bundle_for
from support import private_key, scalar, sec1
from support.hubkit import GATEWAY, World, postgres  # noqa: F401 - a fixture

from test_hub_hostile import hub_cli
from test_hub_keys import query
from test_hub_reload import close, feed, make_hub

NEW_DEVICE = "esp32-0009"


def provision(world: World, device: str, key_label: str) -> None:
    registry = Registry.load(world.folder / "registry.json")
    registry.add(device, "esp32", ["bme280"], sec1(scalar(key_label)))
    registry.save()


def epoch_record(world: World, batches: list[bytes], key=None) -> bytes:
    epoch = Epoch(GATEWAY, 0, tuple(head_of(batch.verify(b, Gateways.load(world.folder / "gateways.json"))) for b in batches))
    receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "5e" * 32, block=812, block_time=world.t0 + 300)
    return sign_epoch(key or world.gateway_key, epoch, 0, len(batches) - 1, receipt)


def new_gateway_key(world: World, revoke_since: str | None = None):
    """The gateway's next key, added as `hub add-gateway` does (the active one revoked first, if asked)."""
    gateways = Gateways.load(world.folder / "gateways.json")
    if revoke_since is not None:
        gateways.revoke(GATEWAY, revoke_since)
    new = private_key(scalar("gateway second key"))
    gateways.add(GATEWAY, new.public_key())
    gateways.save()
    return new


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_message_refused_as_unknown_device_is_stored_in_its_batch_once_the_device_is_provisioned(tmp_path, store, request):
    world = World(tmp_path / "w", devices=1,
                  store_url=request.getfixturevalue("postgres").new_database() if store == "postgresql" else None)
    known = world.devices[0]
    b0 = world.batch(0, [world.message(known), world.message(NEW_DEVICE, seq=3), world.message("esp32-0010", seq=4)])
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b0), (topics.epoch(GATEWAY), epoch_record(world, [b0]))])
        assert query(world, "SELECT code, device_id, batch_seq, leaf FROM rejected ORDER BY id") == [
            ("unknown_device", NEW_DEVICE, 0, 1), ("unknown_device", "esp32-0010", 0, 2)]
        assert query(world, "SELECT refused FROM batches") == [("[1,2]",)]
        provision(world, NEW_DEVICE, NEW_DEVICE)
        provision(world, "esp32-0010", "another key")  # provisioned with a key that did not sign it
        assert hub.maybe_reload() is True
        assert query(world, "SELECT device_id, seq, gateway_id, batch_seq, leaf FROM readings ORDER BY leaf") == [
            (known, 0, GATEWAY, 0, 0), (NEW_DEVICE, 3, GATEWAY, 0, 1)]
        assert query(world, "SELECT COUNT(*) FROM measurements WHERE device_id = 'esp32-0009'") == [(2,)]
        assert query(world, "SELECT refused FROM batches") == [("[2]",)]
        assert query(world, "SELECT code, device_id, leaf FROM rejected") == [("bad_signature", "esp32-0010", 2)]
        assert hub.verify_unknown_devices() == 0  # run again: nothing twice
        assert hub.maybe_reload(force=True) is True
        assert query(world, "SELECT COUNT(*) FROM readings") == [(2,)]
    finally:
        close(hub)
    bundle = bundle_for(hubconfig.load(world.hub_toml(1883, workers=0)), NEW_DEVICE, 3)
    links = proof.verify(json.loads(proof.dumps(bundle)), Registry.load(world.folder / "registry.json"))
    assert "leaf 1 of 3 in batch gw-hub-test/0" in "\n".join(links)


def test_unknown_device_rows_are_verified_again_when_the_worker_starts_and_a_crash_in_between_stores_once(tmp_path):
    world = World(tmp_path / "w", devices=1)
    b0 = world.batch(0, [world.message(NEW_DEVICE, seq=1), world.message(NEW_DEVICE, seq=2)])
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b0)])
    finally:
        close(hub)
    with sqlite3.connect(world.store_url) as db:  # rows kept by an earlier version: the reason names the leaf
        db.execute("UPDATE rejected SET batch_seq = NULL, leaf = NULL")
    db.close()
    provision(world, NEW_DEVICE, NEW_DEVICE)  # while the hub is stopped
    hub = make_hub(world)
    try:
        # a crash after the reading went in, before the row was deleted: the same reading is stored once
        hub.store._exec("INSERT INTO readings (device_id, seq, gateway_id, batch_seq, leaf, message) VALUES "
                        "(?, 1, ?, 0, 0, ?)", (NEW_DEVICE, GATEWAY, batch.verify(b0, world.gateway_keys).messages[0]))
        assert hub.verify_unknown_devices() == 2
        assert hub.verify_unknown_devices() == 0
    finally:
        close(hub)
    assert query(world, "SELECT seq, leaf FROM readings ORDER BY seq") == [(1, 0), (2, 1)]
    assert query(world, "SELECT refused FROM batches") == [("[]",)]
    assert query(world, "SELECT COUNT(*) FROM rejected") == [(0,)]


def test_a_message_of_a_device_provisioned_later_still_passes_the_key_rule(tmp_path):
    world = World(tmp_path / "w", devices=1)
    b0 = world.batch(0, [world.message(NEW_DEVICE, seq=7)])
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b0)])
        provision(world, NEW_DEVICE, NEW_DEVICE)
        registry = Registry.load(world.folder / "registry.json")
        registry.revoke(NEW_DEVICE, "2000-01-01T00:00:00Z")
        registry.save()
        hub.maybe_reload()
    finally:
        close(hub)
    assert query(world, "SELECT COUNT(*) FROM readings") == [(0,)]
    assert query(world, "SELECT code, leaf FROM rejected") == [("revoked_key", 0)]


def test_an_epoch_record_of_a_revoked_gateway_key_after_since_is_refused_and_the_active_keys_passes(tmp_path):
    world = World(tmp_path / "w", devices=1)
    device = world.devices[0]
    since = world.t0 + 100 + 2  # batches 0 and 1 were created before, batch 2 at it
    before = [world.batch(seq, [world.message(device)]) for seq in range(2)]  # stored before the revocation
    after = world.batch(2, [world.message(device)])
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b) for b in before + [after]])
        new = new_gateway_key(world, revoke_since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)))
        assert hub.maybe_reload() is True
        feed(hub, [(topics.epoch(GATEWAY), epoch_record(world, before + [after])),  # the revoked key, after since
                   (topics.epoch(GATEWAY), epoch_record(world, before))])  # the revoked key, all before since
        assert query(world, "SELECT code FROM rejected") == [("revoked_key",)]
        assert "epoch record #2 is signed by the revoked key" in query(world, "SELECT reason FROM rejected")[0][0]
        assert query(world, "SELECT number, last_batch FROM epochs") == [(0, 1)]
        with sqlite3.connect(world.store_url) as db:
            db.execute("DELETE FROM epochs")
        db.close()
        feed(hub, [(topics.epoch(GATEWAY), epoch_record(world, before + [after], key=new))])  # the active key
        assert query(world, "SELECT number, last_batch FROM epochs") == [(0, 2)]
    finally:
        close(hub)


def test_an_epoch_record_of_a_retired_gateway_key_reaching_past_the_boundary_is_refused(tmp_path):
    world = World(tmp_path / "w", devices=1)
    old, new = world.gateway_key, new_gateway_key(world)
    b0, b1 = (world.batch(seq, [world.message(world.devices[0])], key=key) for seq, key in enumerate((old, new)))
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b0), (topics.batch(GATEWAY), b1)])  # batch 1 bounds the old key below 1
        feed(hub, [(topics.epoch(GATEWAY), epoch_record(world, [b0, b1], key=old))])
        assert query(world, "SELECT code FROM rejected") == [("retired_key",)]
        feed(hub, [(topics.epoch(GATEWAY), epoch_record(world, [b0], key=old))])
        assert query(world, "SELECT number, last_batch FROM epochs") == [(0, 0)]
    finally:
        close(hub)


def test_hub_proof_of_a_reading_flagged_revoked_key_writes_the_bundle_and_warns_in_one_line(tmp_path):
    world = World(tmp_path / "w", devices=1)
    device = world.devices[0]
    b0 = world.batch(0, [world.message(device), world.message(device)])
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b0), (topics.epoch(GATEWAY), epoch_record(world, [b0]))])
        registry = Registry.load(world.folder / "registry.json")
        registry.revoke(device, "2025-11-29T07:06:41Z")  # world.t0 + 1: reading #1 is from then on, #0 before
        registry.save()
        assert hub.maybe_reload() is True
    finally:
        close(hub)
    assert query(world, "SELECT seq, flag FROM readings ORDER BY seq") == [(0, None), (1, "revoked_key")]
    config = str(world.hub_toml(1883, workers=0))
    flagged = hub_cli("proof", "--config", config, device, "1")
    assert flagged.returncode == 0, flagged.stderr
    proof.verify(json.loads(flagged.stdout), Registry.load(world.folder / "registry.json"))
    assert flagged.stderr.count("\n") == 1, flagged.stderr
    assert flagged.stderr.startswith(f"govedge hub proof: warning: reading {device} #1 is flagged revoked_key: its key "), \
        flagged.stderr
    assert ("was revoked from 2025-11-29T07:06:41Z: its signature verifies, but the key may have been in other hands"
            in flagged.stderr)
    clean = hub_cli("proof", "--config", config, device, "0")
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr
    warned: list[str] = []
    assert bundle_for(hubconfig.load(config), device, 0, warn=warned.append) and warned == []
    assert bundle_for(hubconfig.load(config), device, 1, warn=warned.append) and len(warned) == 1
