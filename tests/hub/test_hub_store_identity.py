"""A gateway whose store was replaced (a new SD card) numbers its batches and epochs from 0 again, under a new
store id: the hub stores them beside the lost store's, confirms each to the gateway, and proves readings of
both; a hub store of the schema before store ids is migrated. The hub is the real service object, fed as its
broker would (docs/FORMAT.md, "The batch" and "Acknowledgements between gateway and hub")."""

from __future__ import annotations

import sqlite3

import pytest

from govedge.anchor import Receipt
from govedge.core import batch, confirm, proof, topics
from govedge.core.epoch import Epoch, head_of, sign_epoch
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub.proofs import bundle_for
from govedge.hub.store import ADDED_COLUMNS, HubStore, schema_statements
from support.hubkit import GATEWAY, World, postgres  # noqa: F401 - a fixture

from test_hub_keys import query
from test_hub_reload import close, feed, make_hub

STORE_A, STORE_B = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"


def store_batch(world: World, store_id: str | None, seq: int, messages: list[bytes]) -> bytes:
    cose, _root = batch.sign(world.gateway_key, GATEWAY, seq, world.t0 + 100 + seq, messages, [], "raw", store_id)
    return cose


def epoch_record(world: World, store_id: str | None, number: int, batches: list[bytes]) -> bytes:
    heads = tuple(head_of(batch.verify(b, world.gateway_keys)) for b in batches)
    epoch = Epoch(GATEWAY, number, heads, store_id)
    receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + f"{number:02x}" * 32, block=812 + len(heads),
                      block_time=world.t0 + 300)
    last = batch.verify(batches[-1], world.gateway_keys).seq
    return sign_epoch(world.gateway_key, epoch, 0, last, receipt)


def confirmations(hub) -> list:
    """What the hub publishes, kept instead of sent: (topic, confirmation)."""
    sent: list = []
    hub.client.publish = lambda topic, payload, qos=0: sent.append((topic, confirm.loads(payload)))
    return sent


def proven(world: World, device: str, seq: int) -> list[str]:
    """`govedge hub proof` of the reading, checked as an auditor does (govedge.core.proof.verify)."""
    bundle = bundle_for(hubconfig.load(world.hub_toml(1883, workers=0)), device, seq)
    return proof.verify(bundle, Registry.load(world.folder / "registry.json"))


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_fresh_store_numbering_from_0_again_is_stored_confirmed_and_proven_beside_the_lost_one(tmp_path, store,
                                                                                                request):
    world = World(tmp_path / "w", devices=1,
                  store_url=request.getfixturevalue("postgres").new_database() if store == "postgresql" else None)
    device = world.devices[0]
    # the smallest input that broke the promise: batch 0 of a new store after batch 0 of the lost one
    lost = store_batch(world, STORE_A, 0, [world.message(device), world.message(device)])
    fresh = store_batch(world, STORE_B, 0, [world.message(device)])
    hub = make_hub(world)
    sent = confirmations(hub)
    try:
        feed(hub, [(topics.batch(GATEWAY), lost), (topics.epoch(GATEWAY), epoch_record(world, STORE_A, 0, [lost])),
                   (topics.batch(GATEWAY), fresh), (topics.epoch(GATEWAY), epoch_record(world, STORE_B, 0, [fresh])),
                   (topics.batch(GATEWAY), fresh),  # delivered again: confirmed again, as a duplicate
                   # within one store an id seen with other contents is still a conflict
                   (topics.batch(GATEWAY), store_batch(world, STORE_B, 0, [world.message(device)]))])
    finally:
        close(hub)
    assert [(t, c.kind, c.store_id, c.number, c.outcome, c.code) for t, c in sent] == [
        (topics.committed(GATEWAY), "batch", STORE_A, 0, "stored", None),
        (topics.committed(GATEWAY), "epoch", STORE_A, 0, "stored", None),
        (topics.committed(GATEWAY), "batch", STORE_B, 0, "stored", None),
        (topics.committed(GATEWAY), "epoch", STORE_B, 0, "stored", None),
        (topics.committed(GATEWAY), "batch", STORE_B, 0, "duplicate", None),
        (topics.committed(GATEWAY), "batch", STORE_B, 0, "rejected", "conflicting_batch")]
    assert sorted(query(world, "SELECT store_id, seq FROM batches")) == [(STORE_A, 0), (STORE_B, 0)]
    assert sorted(query(world, "SELECT store_id, number FROM epochs")) == [(STORE_A, 0), (STORE_B, 0)]
    assert query(world, "SELECT code FROM rejected") == [("conflicting_batch",)]
    assert f"batch {GATEWAY}/{STORE_B}/0 is here already" in query(world, "SELECT reason FROM rejected")[0][0]
    # readings of both stores prove, each through its own store's batch and epoch
    assert f"in batch {GATEWAY}/{STORE_A}/0: valid" in proven(world, device, 1)[2]
    lines = proven(world, device, 2)
    assert f"in batch {GATEWAY}/{STORE_B}/0: valid" in lines[2]
    assert f"in epoch 0 of {GATEWAY}, store {STORE_B}: valid" in lines[3]


def _old_store(world: World) -> bytes:
    """A hub store as the version before store ids made it, holding batch 0 and epoch 0 of a gateway from before
    store ids (in the raw SQL of that version: the tables, then the columns it had added); returns the batch."""
    ph = "%s" if world.store_url.startswith("postgresql://") else "?"
    dialect = "postgresql" if ph == "%s" else "sqlite"
    if dialect == "postgresql":
        import psycopg

        db = psycopg.connect(world.store_url, autocommit=True)
    else:
        db = sqlite3.connect(world.store_url, isolation_level=None)
    from govedge.hub.store import TYPES

    for statement in schema_statements(dialect):
        db.execute(statement)
    before = [c[1] for c in ADDED_COLUMNS].index("store_id")  # the columns added before store ids
    for table, column, definition, _what in ADDED_COLUMNS[:before]:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} " + definition.format(**TYPES[dialect]))
    device = world.devices[0]
    message = world.message(device)
    old = store_batch(world, None, 0, [message])
    b = batch.verify(old, world.gateway_keys)
    db.execute(f"INSERT INTO batches (gateway_id, seq, created, received_at, mode, size, root, cose) "
               f"VALUES ({', '.join([ph] * 8)})", (GATEWAY, 0, b.created, 1.0, b.mode, b.size, b.root, old))
    db.execute(f"INSERT INTO readings (device_id, seq, time, gateway_id, batch_seq, leaf, message) "
               f"VALUES ({', '.join([ph] * 7)})", (device, 0, float(world.t0), GATEWAY, 0, 0, message))
    db.execute(f"INSERT INTO measurements (device_id, seq, name, pos, unit, value, value_text) "
               f"VALUES ({', '.join([ph] * 7)})", (device, 0, "temp", 0, "Cel", 21.5, "21.50"))
    rec = epoch_record(world, None, 0, [old])
    from govedge.core.epoch import verify_epoch
    import cbor2

    e = verify_epoch(rec, world.gateway_keys)
    db.execute(f"INSERT INTO epochs (gateway_id, number, first_batch, last_batch, size, root, heads, receipt, cose) "
               f"VALUES ({', '.join([ph] * 9)})", (GATEWAY, 0, 0, 0, 1, e.epoch.root,
                                                    cbor2.dumps(list(e.epoch.heads)), e.receipt.dumps(), rec))
    db.close()
    return old


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_hub_store_from_before_store_ids_is_migrated_and_takes_a_fresh_stores_batch_0(tmp_path, store, request):
    world = World(tmp_path / "w", devices=1,
                  store_url=request.getfixturevalue("postgres").new_database() if store == "postgresql" else None)
    device = world.devices[0]
    old = _old_store(world)
    world.next_seq[device] = 1
    fresh = store_batch(world, STORE_B, 0, [world.message(device)])
    hub = make_hub(world)  # opens the store: migrated
    sent = confirmations(hub)
    try:
        feed(hub, [(topics.batch(GATEWAY), fresh), (topics.epoch(GATEWAY), epoch_record(world, STORE_B, 0, [fresh])),
                   (topics.batch(GATEWAY), old)])  # the old gateway's batch delivered again
    finally:
        close(hub)
    assert [(c.kind, c.store_id, c.outcome) for _, c in sent] == [("batch", STORE_B, "stored"),
                                                                    ("epoch", STORE_B, "stored"),
                                                                    ("batch", None, "duplicate")]
    assert sorted(query(world, "SELECT store_id, seq FROM batches")) == [("", 0), (STORE_B, 0)]
    assert sorted(query(world, "SELECT store_id, number FROM epochs")) == [("", 0), (STORE_B, 0)]
    assert query(world, "SELECT device_id, seq, store_id FROM readings ORDER BY seq") == [(device, 0, ""),
                                                                                       (device, 1, STORE_B)]
    assert query(world, "SELECT count(*) FROM rejected") == [(0,)]
    assert f"in batch {GATEWAY}/0: valid" in proven(world, device, 0)[2]  # the old id, as before
    assert f"in batch {GATEWAY}/{STORE_B}/0: valid" in proven(world, device, 1)[2]
    # opened again: nothing more to migrate, nothing changed
    HubStore(world.store_url).close()
    assert sorted(query(world, "SELECT store_id, seq FROM batches")) == [("", 0), (STORE_B, 0)]


def test_the_hub_sqlite_store_fsyncs_every_commit_unless_told_otherwise(tmp_path):
    world = World(tmp_path / "w", devices=1)
    for setting, pragma in (("FULL", 2), ("NORMAL", 1)):
        s = HubStore(world.store_url, synchronous=setting)
        try:
            assert s.db.execute("PRAGMA synchronous").fetchone()[0] == pragma
        finally:
            s.close()
    assert hubconfig.load(world.hub_toml(1883)).synchronous == "FULL"


def test_what_the_hub_refuses_is_confirmed_as_refused_with_its_code_and_garbage_names_nothing_to_confirm(tmp_path):
    from support import private_key, scalar

    world = World(tmp_path / "w", devices=1)
    device = world.devices[0]
    forged, _root = batch.sign(private_key(scalar("someone-else")), GATEWAY, 5, world.t0, [world.message(device)],
                               [], "raw", STORE_A)
    stranger, _root = batch.sign(world.gateway_key, "gw-unknown", 0, world.t0, [world.message(device)], [], "raw",
                                 STORE_B)
    hub = make_hub(world)
    sent = confirmations(hub)
    try:
        feed(hub, [(topics.batch(GATEWAY), forged), (topics.batch(GATEWAY), b"\xd2\x84garbage"),
                   (topics.batch("gw-unknown"), stranger)])
    finally:
        close(hub)
    # a forged batch is confirmed by what it names (only its gateway may write its topic): the gateway that sent
    # it stops sending it; one of a gateway not known yet is held, and confirmed as waiting
    assert [(t, c.store_id, c.number, c.outcome, c.code) for t, c in sent] == [
        (topics.committed(GATEWAY), STORE_A, 5, "rejected", "bad_signature"),
        (topics.committed("gw-unknown"), STORE_B, 0, "waiting", "unknown_gateway")]
