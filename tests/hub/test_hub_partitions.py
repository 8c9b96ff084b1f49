"""The hub store at state scale: a PostgreSQL store files readings and measurements in monthly partitions,
keeps each reading once, drops whole months for retention, and a store of the shape before (the files in
tests/hub/data) is moved into the new one with every reading, exportable and provable as before."""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path

import pytest

from govedge.core import batch, wire
from govedge.hub import partitions
from govedge.hub.store import HubStore
from support import firmware, scalar
from support.hubkit import GATEWAY, World, postgres  # noqa: F401

DATA = Path(__file__).parent / "data"
JAN = calendar.timegm((2026, 1, 15, 12, 0, 0))
FEB = calendar.timegm((2026, 2, 15, 12, 0, 0))
MAR = calendar.timegm((2026, 3, 15, 12, 0, 0))


def untimed(device: str, seq: int) -> bytes:
    """A reading of a node whose clock was not set: no time in it."""
    return firmware("reading").signed_reading(scalar(device), device, seq, None, [("temp", "Cel", (2150, -2))])


def signed_batch(world: World, seq: int, t0: int, messages) -> batch.Batch:
    world.t0 = t0
    return batch.verify(world.batch(seq, [m() if callable(m) else m for m in messages]), world.gateway_keys)


def rows(store: HubStore, sql: str) -> list[tuple]:
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in store._exec(sql).fetchall()]


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path / "hub")


def test_readings_and_measurements_are_filed_in_the_partition_of_their_month_and_kept_once(world, postgres):
    store = HubStore(postgres.new_database())
    d1, d2, _ = world.devices
    world.t0 = JAN
    jan = [world.message(d1, 1), world.message(d2, 1)]
    world.t0 = FEB
    feb = world.message(d1, 2)
    b0 = signed_batch(world, 0, FEB, [*jan, feb, untimed(d2, 2)])  # the untimed one: filed by the batch's time
    with store.transaction():
        assert store.add_batch(b0) == {}
    b1 = signed_batch(world, 1, MAR, [feb, lambda: world.message(d2, 3)])  # feb once more, in another batch
    with store.transaction():
        assert store.add_batch(b1) == {}
        assert store.add_batch(b1) is None  # the same batch again
    by_partition = dict(rows(store, "SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1"))
    assert by_partition == {"readings_p202601": 2, "readings_p202602": 2, "readings_p202603": 1}
    assert dict(rows(store, "SELECT tableoid::regclass::text, count(*) FROM measurements GROUP BY 1")) == {
        "measurements_p202601": 4, "measurements_p202602": 3, "measurements_p202603": 2}
    assert rows(store, f"SELECT at, time FROM readings WHERE device_id = '{d2}' AND seq = 2") == [(b0.created, None)]
    assert store.reading_of(d1, 2).batch_seq == 0
    assert [(r.device_id, r.seq) for r in store.export_rows()] == [(d1, 1), (d1, 2), (d2, 1), (d2, 2), (d2, 3)]
    # the coming months are made ahead (the hub's housekeeping): the write path never waits to make a table
    store.prepare_ahead()
    now = partitions.month_of(__import__("time").time())
    names = {n for (n,) in rows(store, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'readings_p%%'")}
    assert {partitions.name("readings", partitions.add_months(now, n)) for n in range(3)} <= names
    assert "readings_pold" in names
    store.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_retention_drops_whole_months_and_keeps_the_gateways_evidence(world, request, dialect):
    url = request.getfixturevalue("postgres").new_database() if dialect == "postgresql" else str(world.folder / "r.db")
    store = HubStore(url)
    d1 = world.devices[0]
    with store.transaction():
        for seq, t0 in enumerate((JAN, FEB, MAR)):
            store.add_batch(signed_batch(world, seq, t0, [lambda: world.message(d1)]))
    assert store.expire(0, now=MAR) == {"partitions": 0, "readings": 0, "aggregates": 0}  # 0: keep everything
    gone = store.expire(1, now=MAR)  # keep February (the last whole month) and March
    assert gone["readings"] == 1 and gone["partitions"] == (2 if dialect == "postgresql" else 0)
    assert [r.seq for r in store.export_rows()] == [1, 2]
    assert store.count("measurements") == 4 and store.count("batches") == 3  # the batches stay
    if dialect == "postgresql":
        names = {n for (n,) in rows(store, "SELECT tablename FROM pg_tables WHERE tablename LIKE '%%_p2026%%'")}
        assert not {"readings_p202601", "measurements_p202601"} & names
        assert {"readings_p202602", "measurements_p202603"} <= names
    store.close()


def _old_store(dialect: str, url: str, world: World) -> tuple[list[bytes], list[batch.Batch]]:
    """A store of the shape before partitions (tests/hub/data), holding batches of two months the way that
    version stored them; the device messages, in (device, seq) order, and the batches."""
    schema = (DATA / f"store-before-partitions.{dialect}.sql").read_text()
    statements = [s for s in "\n".join(line for line in schema.splitlines()
                                       if not line.startswith("--")).split(";\n") if s.strip()]
    if dialect == "postgresql":
        import psycopg

        db = psycopg.connect(url, autocommit=True)
        for s in statements:
            db.execute(s)
        mark = "%s"
    else:
        db = sqlite3.connect(url, isolation_level=None)
        for s in statements:
            db.execute(s)
        mark = "?"
    d1, d2, _ = world.devices
    batches = [signed_batch(world, 0, JAN, [lambda: world.message(d1), lambda: world.message(d2)]),
               signed_batch(world, 1, FEB, [lambda: world.message(d1), untimed(d2, 5)])]
    for b in batches:
        db.execute(f"INSERT INTO batches (gateway_id, store_id, seq, created, received_at, mode, size, root, cose, "
                   f"refused) VALUES ({', '.join([mark] * 10)})",
                   (b.gateway_id, b.store_id or "", b.seq, b.created, 1.0, b.mode, b.size, b.root, b.cose, "[]"))
        for leaf, m in enumerate(b.messages):
            r = wire.decode_unverified(m)
            db.execute(f"INSERT INTO readings (device_id, seq, time, gateway_id, store_id, batch_seq, leaf, message) "
                       f"VALUES ({', '.join([mark] * 8)})",
                       (r.device_id, r.seq, r.time, b.gateway_id, b.store_id or "", b.seq, leaf, m))
            for pos, x in enumerate(r.measurements):
                db.execute(f"INSERT INTO measurements (device_id, seq, name, pos, unit, value, value_text) "
                           f"VALUES ({', '.join([mark] * 7)})",
                           (r.device_id, r.seq, x.name, pos, x.unit, float(x.value), str(x.value)))
    db.close()
    return sorted((m for b in batches for m in b.messages), key=lambda m: (wire.decode_unverified(m).device_id,
                                                                           wire.decode_unverified(m).seq)), batches


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_store_from_before_partitions_is_moved_into_them_with_every_reading(world, request, dialect):
    url = request.getfixturevalue("postgres").new_database() if dialect == "postgresql" else str(world.folder / "o.db")
    messages, batches = _old_store(dialect, url, world)
    store = HubStore(url)  # opening it migrates it
    assert [r.message for r in store.export_rows()] == messages
    assert rows(store, "SELECT count(*) FROM measurements WHERE at IS NULL") == [(0,)]
    d2 = world.devices[1]
    feb_created = FEB + 100 + 1  # batch 1's time (support.hubkit.World.batch)
    assert rows(store, f"SELECT at FROM readings WHERE device_id = '{d2}' AND time IS NULL") == [(feb_created,)]
    if dialect == "postgresql":
        assert dict(rows(store, "SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1")) == {
            "readings_p202601": 2, "readings_p202602": 2}
        assert rows(store, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%unpartitioned'") == [(0,)]
    else:
        indexes = {n for (n,) in rows(store, "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "measurements_datastream" in indexes and "readings_time" not in indexes
    # it goes on as a store of the new shape: the same batch again is a duplicate, a new one is stored
    with store.transaction():
        assert store.add_batch(batches[0]) is None
        assert store.add_batch(signed_batch(world, 2, MAR, [lambda: world.message(world.devices[0])])) == {}
    store.close()
    store = HubStore(url)  # opened again: nothing to move
    assert store.count("readings") == 5 and store.count("measurements") == 9
    store.close()
