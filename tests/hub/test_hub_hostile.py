"""Hostile input at the hub, with real parts: Mosquitto, `govedge hub run` as its own process,
SQLite and a real PostgreSQL. Each test sends the hostile batch first and good batches after
it; the hub must stay up (the same process, never restarted) and store every good reading."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys

import cbor2
import pytest

from govedge.core import batch, proof, topics, wire
from govedge.core.epoch import Epoch, head_of, sign_epoch
from govedge.anchor import Receipt
from govedge.hub.store import HubStore
from govedge.core.registry import Registry
from support.hubkit import GATEWAY, HubProcess, World, broker, postgres, publish, publish_batches  # noqa: F401
from support import cose_sign1, private_key, protected_header, scalar, senml, wait_until

# the 92-byte message of issue 10: a protected header whose alg is a CBOR shared value (tag 28)
# holding a reference (tag 29) to itself
SELF_REFERENCE = bytes.fromhex("a201d81c81d81d0004")


def crafted(device: str, payload, protected: bytes | None = None) -> bytes:
    """A device message with a valid signature of the device's key over whatever contents."""
    return cose_sign1(private_key(scalar(device)), payload,
                      protected=protected if protected is not None else protected_header(kid=device.encode()))


def store_url(request, world_folder) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return str(world_folder / "hub.db")


def query(url: str, sql: str) -> list[tuple]:
    """Rows of the hub's store, read over a plain connection: opening a HubStore would make tables and
    partitions beside the hub under test."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            rows = db.execute(sql.replace("%", "%%")).fetchall()
    else:
        try:
            db = sqlite3.connect(f"file:{url}?mode=ro", uri=True, timeout=10)
        except sqlite3.OperationalError:  # the hub has not made its store yet
            return [(0,)] if sql.startswith("SELECT count(*)") else []
        try:
            rows = db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # nor its tables
            rows = [(0,)] if sql.startswith("SELECT count(*)") else []
        finally:
            db.close()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def count(url: str, table: str) -> int:
    return query(url, f"SELECT count(*) FROM {table}")[0][0]


def stored(url: str, batch_seq: int) -> bool:
    """Whether the batch is stored; one hub worker stores batches in the order they came."""
    return bool(query(url, f"SELECT count(*) FROM batches WHERE gateway_id = '{GATEWAY}' AND seq = {batch_seq}")[0][0])


def assert_up_all_along(hub: HubProcess) -> None:
    assert hub.proc.poll() is None, f"the hub ended:\n{hub.log[-2000:]}"
    assert hub.log.count("hub running") == 1, "the hub was started again"
    assert "Traceback" not in hub.log, hub.log[-3000:]


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path):
    folder = tmp_path / "w"
    return World(folder, devices=4, store_url=store_url(request, folder))


def test_a_bad_device_message_in_a_signed_batch_is_refused_alone_and_the_rest_is_stored(world, broker):
    d1, d2, d3, d4 = world.devices
    self_reference = crafted(d1, [], protected=SELF_REFERENCE + cbor2.dumps(d1.encode()))
    assert len(self_reference) == 92
    huge_exponent = crafted(d2, senml(seq=900, records=[{0: "temp", 1: "Cel", 2: cbor2.CBORTag(4, [3_000_000_000, 5])}]))
    seq_2_63 = crafted(d3, senml(seq=2**63))
    hostile = [  # (batch, its leaves, the refused leaf, its code)
        ([world.message(d1), self_reference, world.message(d2)], 1, "not_cbor"),
        ([world.message(d2), world.message(d3), huge_exponent], 2, "bad_record"),
        ([seq_2_63, world.message(d1)], 0, "bad_sequence"),
    ]
    hostile_batches = [world.batch(seq, messages) for seq, (messages, _, _) in enumerate(hostile)]
    good = world.batches(3, first_seq=len(hostile)) + [world.batch(10, [world.message(d4), world.message(d4)])]
    good_readings = {(r.device_id, r.seq) for b in hostile_batches + good
                     for r in _verifiable(batch.verify(b, world.gateway_keys).messages, world)}
    assert len(good_readings) == 5 + 12 + 2

    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()
        publish_batches(broker.port, hostile_batches + good)
        wait_until(lambda: stored(world.store_url, 10), what="the last good batch stored")
        assert_up_all_along(hub)
    finally:
        hub.stop()
    store = HubStore(world.store_url)
    try:
        assert store.reading_ids() == good_readings
        assert count(world.store_url, "batches") == 7
        rejected = query(world.store_url, "SELECT code, reason, payload, sha256, size, gateway_id FROM rejected "
                                          "ORDER BY id")
        refused = dict(query(world.store_url, "SELECT seq, refused FROM batches"))
    finally:
        store.close()
    for (messages, leaf, code), (got_code, reason, payload, sha256, size, gateway_id), seq in \
            zip(hostile, rejected, range(len(hostile))):
        assert got_code == code
        assert reason.startswith(f"batch {GATEWAY}/{seq}, message {leaf}: "), reason
        assert payload == messages[leaf] and sha256 == hashlib.sha256(messages[leaf]).digest()  # kept whole
        assert size == len(messages[leaf]) and gateway_id == GATEWAY
        assert json.loads(refused[seq]) == [leaf]
    assert all(json.loads(refused[b]) == [] for b in (3, 4, 5, 10))


def _verifiable(messages, world) -> list[wire.Reading]:
    registry = Registry.load(world.folder / "registry.json")
    out = []
    for m in messages:
        try:
            out.append(wire.verify(m, registry))
        except wire.WireError:
            pass
    return out


def test_a_stored_reading_beside_a_refused_one_has_a_proof_and_the_refused_one_a_clear_error(tmp_path, broker):
    world = World(tmp_path / "w")
    d1, d2, d3 = world.devices
    forged = world.message(d2, seq=500, key_of=d3)  # reads well, signed with another device's key
    b0 = world.batch(0, [world.message(d1), forged, world.message(d3)])
    b1 = world.batch(1, [world.message(d1)])
    epoch = Epoch(GATEWAY, 0, tuple(head_of(batch.verify(b, world.gateway_keys)) for b in (b0, b1)))
    receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "5e" * 32, block=812, block_time=world.t0 + 300)
    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()
        publish(broker.port, [(topics.batch(GATEWAY), b0), (topics.batch(GATEWAY), b1),
                              (topics.epoch(GATEWAY), sign_epoch(world.gateway_key, epoch, 0, 1, receipt))])
        wait_until(lambda: count(world.store_url, "epochs") == 1 and stored(world.store_url, 1),
                   what="both batches and the epoch stored")
    finally:
        hub.stop()
    registry = Registry.load(world.folder / "registry.json")
    for device, seq in ((d1, 0), (d3, 0), (d1, 1)):
        out = hub_cli("proof", "--config", str(hub.config), device, str(seq))
        assert out.returncode == 0, out.stderr
        links = proof.verify(json.loads(out.stdout), registry)
        assert [line.split()[0] for line in links] == ["reading", "device_signature", "batch_path", "epoch_path",
                                                       "anchor_receipt"]
    assert "leaf 2 of 3 in batch gw-hub-test/0" in "\n".join(proof.verify(json.loads(
        hub_cli("proof", "--config", str(hub.config), d3, "0").stdout), registry))
    out = hub_cli("proof", "--config", str(hub.config), d2, "500")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"govedge hub proof: the hub refused reading {d2} #500 (bad_signature: batch "
                                 f"{GATEWAY}/0, message 1: signature does not verify"), out.stderr


def hub_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", *args], capture_output=True, text=True)


def refuse_seq_700(url: str) -> None:
    """A limit of the database nobody foresaw, made real: PostgreSQL refuses the measurements of
    sequence number 700 (a CHECK constraint), so storing that one reading fails halfway through
    its batch, after its row in readings went in."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE measurements ADD CONSTRAINT no_seq_700 CHECK (seq <> 700)")


def test_a_reading_the_database_cannot_hold_is_refused_alone_and_its_batch_stored(tmp_path, broker, postgres):
    world = World(tmp_path / "w", store_url=postgres.new_database())
    d1, d2, d3 = world.devices
    hostile = world.batch(0, [world.message(d2), world.message(d1, seq=700), world.message(d3)])
    good = world.batches(3, first_seq=1)
    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()  # the tables exist from here on
        refuse_seq_700(world.store_url)
        publish_batches(broker.port, [hostile] + good)
        wait_until(lambda: stored(world.store_url, 3), what="the last good batch stored")
        assert_up_all_along(hub)
    finally:
        hub.stop()
    (code, reason, device_id, seq), = query(world.store_url, "SELECT code, reason, device_id, seq FROM rejected")
    assert (code, device_id, seq) == ("internal_error", d1, 700)
    assert reason.startswith(f"batch {GATEWAY}/0, message 1: could not be stored: the hub raised CheckViolation"), \
        reason
    assert "no_seq_700" in reason
    assert query(world.store_url, "SELECT refused FROM batches WHERE seq = 0") == [("[1]",)]
    assert count(world.store_url, "readings") == 2 + 12
    assert query(world.store_url, "SELECT count(*) FROM readings WHERE seq = 700") == [(0,)]
    assert "storing its readings one by one" in hub.log


def test_a_statement_failing_halfway_through_a_batch_undoes_nothing_of_the_others_in_its_transaction(tmp_path,
                                                                                                     postgres):
    from govedge.hub import config as hubconfig
    from govedge.hub.service import Delivery, HubService

    world = World(tmp_path / "w", store_url=postgres.new_database())
    d1, d2, d3 = world.devices
    first, last = world.batches(2, first_seq=1)
    hostile = world.batch(0, [world.message(d2), world.message(d3), world.message(d1, seq=700), world.message(d3)])
    hub = HubService(hubconfig.load(world.hub_toml(1883, workers=0)))  # fed here, not by a broker
    refuse_seq_700(world.store_url)
    acks: list[int] = []
    try:
        for i, b in enumerate((first, hostile, last)):
            hub.inbox.put(Delivery(topics.batch(GATEWAY), b, lambda i=i: acks.append(i)))
        assert hub.step(0) == 3  # the three in one transaction
    finally:
        hub.verifier.close()
        hub.store.close()
        hub.guard.close()
    assert acks == [0, 1, 2]
    assert count(world.store_url, "batches") == 3
    assert count(world.store_url, "readings") == 4 + 3 + 4  # the hostile batch's first two once, not twice
    assert query(world.store_url, "SELECT code, seq FROM rejected") == [("internal_error", 700)]
    assert hub.counters["rejected_internal_error"] == 1 and hub.counters["readings"] == 11


def journal_of(toml) -> "Path":
    """The crash guard's journal of the hub worker of ``toml`` (state_dir: the folder of hub.toml)."""
    return toml.parent / "handling-hub-worker-1"


def test_a_batch_the_hub_keeps_dying_on_is_refused_and_the_ones_after_it_are_stored(tmp_path, broker):
    world = World(tmp_path / "w")
    deadly, beside, *good = world.batches(4)
    toml = world.hub_toml(broker.port)
    hub = HubProcess(toml)
    # the journals its deaths would leave: first with the batch among others, then twice with it alone;
    # each start of the hub reads the journal
    deaths = [b"0" + hashlib.sha256(deadly).digest() + hashlib.sha256(beside).digest(),
              b"1" + hashlib.sha256(deadly).digest(), b"1" + hashlib.sha256(deadly).digest()]
    for start, journal in enumerate(deaths, 1):
        journal_of(toml).write_bytes(journal)
        hub.start().wait_subscribed(times=start)
        if start < len(deaths):
            hub.stop()
    assert "it is refused from now on (internal_error)" in hub.log
    try:
        publish_batches(broker.port, [deadly, beside] + good)
        wait_until(lambda: stored(world.store_url, 3), what="the last good batch stored")
        assert hub.proc.poll() is None and hub.log.count("hub running") == len(deaths), hub.log[-2000:]
    finally:
        hub.stop()
    (code, reason, payload, sha256), = query(world.store_url, "SELECT code, reason, payload, sha256 FROM rejected")
    assert code == "internal_error" and payload == deadly and sha256 == hashlib.sha256(deadly).digest()
    assert reason.startswith("the service process died 3 times while handling this input"), reason
    assert not stored(world.store_url, 0)
    assert count(world.store_url, "batches") == 3 and count(world.store_url, "readings") == 12
    assert hub.log.count("crash guard: a suspect from") == 1  # the batch beside it, a suspect no more
    assert json.loads((toml.parent / "handling-hub-worker-1.json").read_text()).keys() == \
        {hashlib.sha256(deadly).hexdigest()}
    assert journal_of(toml).stat().st_size == 0


def test_batches_a_process_died_with_in_hand_are_handled_alone_and_stored(tmp_path, broker):
    world = World(tmp_path / "w")
    batches = world.batches(4)
    toml = world.hub_toml(broker.port)
    journal_of(toml).write_bytes(b"0" + b"".join(hashlib.sha256(b).digest() for b in batches[:2]))
    hub = HubProcess(toml).start()
    try:
        hub.wait_subscribed()
        publish_batches(broker.port, batches)
        wait_until(lambda: stored(world.store_url, 3), what="the last batch stored")
        assert_up_all_along(hub)
    finally:
        hub.stop()
    assert count(world.store_url, "batches") == 4 and count(world.store_url, "readings") == 16
    assert count(world.store_url, "rejected") == 0
    assert hub.log.count("crash guard: a suspect from") == 2
    assert json.loads((toml.parent / "handling-hub-worker-1.json").read_text()) == {}


def test_the_rejected_table_keeps_to_its_budget_and_one_gateways_garbage_leaves_anothers_evidence(tmp_path, broker):
    world = World(tmp_path / "w")
    toml = world.hub_toml(broker.port, hub_extra="rejected_max_rows = 10\nrejected_keep_bytes = 4096\n")
    flood = [bytes([i]) * 50_000 for i in range(30)]  # garbage of 50 kB each, on the topic of gw-flood
    evidence = [b"\xd2\x84" + b"%d" % i for i in range(3)]  # a few bad ones of another gateway
    hub = HubProcess(toml).start()
    try:
        hub.wait_subscribed()
        publish(broker.port, [(topics.batch("gw-quiet"), e) for e in evidence[:2]]
                + [(topics.batch("gw-flood"), f) for f in flood] + [(topics.batch("gw-quiet"), evidence[2])])
        publish_batches(broker.port, world.batches(3))
        wait_until(lambda: stored(world.store_url, 2) and count(world.store_url, "rejected") == 10,
                   what="the good batches stored and the rejected table pruned to its budget")
        assert_up_all_along(hub)
    finally:
        hub.stop()
    assert count(world.store_url, "readings") == 12
    rows = query(world.store_url, "SELECT gateway_id, payload, sha256, size FROM rejected ORDER BY id")
    assert [p for g, p, _, _ in rows if g == "gw-quiet"] == evidence  # all of it kept
    kept = [(p, s, n) for g, p, s, n in rows if g == "gw-flood"]
    assert len(kept) == 7  # its share: 10 rows less the other gateway's 3, the newest
    for (payload, sha256, size), original in zip(kept, flood[-7:]):
        assert payload == original[:4096] and sha256 == hashlib.sha256(original).digest() and size == 50_000
    pruned = sum(int(n) for n in re.findall(r"pruned the oldest (\d+) rows", hub.log))
    assert pruned == 23
    assert "23 pruned since the start" in hub.log


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_store(request, tmp_path) -> str:
    return store_url(request, tmp_path)


def test_a_store_of_the_first_schema_gets_the_new_columns_when_opened(empty_store):
    from govedge.hub import store as hubstore

    dialect = "postgresql" if empty_store.startswith("postgresql://") else "sqlite"
    old_payload = b"\xd2\x84" + bytes(100_000)  # rejected rows were kept whole
    if dialect == "postgresql":
        import psycopg

        db = psycopg.connect(empty_store, autocommit=True)
    else:
        import sqlite3

        db = sqlite3.connect(empty_store, isolation_level=None)
    ph = "%s" if dialect == "postgresql" else "?"
    for statement in hubstore.schema_statements(dialect):  # the tables as the first version made them
        db.execute(statement)
    db.execute(f"INSERT INTO batches (gateway_id, seq, created, received_at, mode, size, root, cose) "
               f"VALUES ({', '.join([ph] * 8)})", ("gw-old", 0, 1, 2.0, "raw", 0, bytes(32), b"old batch"))
    db.execute(f"INSERT INTO rejected (received_at, topic, gateway_id, code, reason, payload) "
               f"VALUES ({', '.join([ph] * 6)})", (3.0, topics.batch("gw-old"), None, "not_cbor", "old", old_payload))
    db.close()

    for _ in range(2):  # opened twice: the second time there is nothing to add
        s = HubStore(empty_store)
        s.close()
    assert query(empty_store, "SELECT gateway_id, refused FROM batches") == [("gw-old", "[]")]
    assert query(empty_store, "SELECT code, size, sha256, payload, device_id, seq FROM rejected") == \
        [("not_cbor", len(old_payload), hashlib.sha256(old_payload).digest(), old_payload, None, None)]
    fresh_url = empty_store + "_fresh" if dialect == "postgresql" else empty_store + ".fresh"
    if dialect == "postgresql":
        with psycopg.connect(empty_store.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {fresh_url.rsplit('/', 1)[1]}")
    s, fresh = HubStore(empty_store), HubStore(fresh_url)
    try:
        for table in ("batches", "rejected"):
            assert s._columns(table) == fresh._columns(table)
    finally:
        s.close()
        fresh.close()


def test_the_rejected_budget_in_bytes_is_shared_fairly_and_the_oldest_go_first(empty_store):
    s = HubStore(empty_store, keep_bytes=4096)
    try:
        with s.transaction():
            for i in range(20):
                s.reject(topics.batch("gw-flood"), "gw-flood", "not_cbor", f"flood {i}", bytes([i]) * 10_000)
            for i in range(4):
                s.reject(topics.batch("gw-quiet"), "gw-quiet", "not_cbor", f"quiet {i}", bytes(1000))
            s.reject(topics.batch("gw-other"), "gw-other", "not_cbor", "other", bytes(3000))
        with s.transaction():
            pruned = s.prune_rejected(max_bytes=6 * 4096 + 1000, max_rows=1000)
        with s.transaction():
            assert s.prune_rejected(max_bytes=6 * 4096 + 1000, max_rows=1000) == {}  # within it now
        rows = s._exec("SELECT gateway_id, reason, length(payload) FROM rejected ORDER BY id").fetchall()
    finally:
        s.close()
    # 4000 bytes of gw-quiet and 3000 of gw-other are below the fair share: kept whole;
    # gw-flood is cut to what is left, 25576 - 7000 bytes: its newest 4 rows of 4096
    assert pruned == {"gw-flood": 16}
    assert [r for g, r, _ in rows if g == "gw-flood"] == [f"flood {i}" for i in range(16, 20)]
    assert [r for g, r, _ in rows if g != "gw-flood"] == [f"quiet {i}" for i in range(4)] + ["other"]
    assert all(n == 4096 for g, _, n in rows if g == "gw-flood")


def test_budget_and_state_dir_settings_are_checked_and_named(tmp_path):
    from govedge.core.config import ConfigError
    from govedge.hub import config as hubconfig

    world = World(tmp_path / "w")
    cfg = hubconfig.load(world.hub_toml(1883))
    assert cfg.state_dir == world.folder and cfg.rejected_keep_bytes == 262144
    assert (cfg.rejected_max_bytes, cfg.rejected_max_rows) == (256_000_000, 100_000)
    for line, named in (("rejected_keep_bytes = 100\n", "[hub] rejected_keep_bytes = 100: expected a whole number of "
                                                        "at least 2048"),
                        ("rejected_max_rows = 0\n", "[hub] rejected_max_rows = 0: expected a whole number of at least 1"),
                        ('rejected_max_bytes = "1GB"\n', '[hub] rejected_max_bytes = "1GB": expected a whole number'),
                        ("state_dir = 3\n", "[hub] state_dir = 3: expected a path (a string)")):
        path = world.hub_toml(1883, hub_extra=line)
        with pytest.raises(ConfigError) as exc:
            hubconfig.load(path)
        assert str(exc.value).startswith(f"{path}: {named}")
    # the store's durability: FULL unless NORMAL is asked for; anything else is named
    assert cfg.synchronous == "FULL"
    store_toml = world.hub_toml(1883)
    store_toml.write_text(store_toml.read_text().replace("[store]\n", '[store]\nsynchronous = "NORMAL"\n'))
    assert hubconfig.load(store_toml).synchronous == "NORMAL"
    store_toml.write_text(store_toml.read_text().replace('"NORMAL"', '"OFF"'))
    with pytest.raises(ConfigError) as exc:
        hubconfig.load(store_toml)
    assert str(exc.value) == f'{store_toml}: [store] synchronous = "OFF": expected one of "FULL", "NORMAL"'
    # a state_dir that cannot be made is named, in one line
    (tmp_path / "no").write_text("a file where the folder should be")
    out = hub_cli("run", "--config", str(world.hub_toml(1883, hub_extra=f'state_dir = "{tmp_path / "no"}"\n')))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"govedge hub run: [hub] state_dir {tmp_path / 'no'}: the crash guard's journal "
                                 "cannot be kept there (File exists)"), out.stderr


def test_a_database_gone_refuses_nothing_and_stops_the_worker_in_one_line(tmp_path, broker):
    from support.postgres import PostgresServer

    server = PostgresServer().start()  # its own: stopped under the hub
    try:
        world = World(tmp_path / "w", store_url=server.new_database())
        first, second = world.batches(2)
        hub = HubProcess(world.hub_toml(broker.port)).start()
        hub.wait_subscribed()
        publish_batches(broker.port, [first])
        wait_until(lambda: "batch gw-hub-test/0: 4 readings" in hub.log, what="the first batch stored")
    finally:
        server.stop()
    try:
        publish_batches(broker.port, [second])
        hub.proc.wait(30)
    finally:
        hub.kill()
    assert hub.proc.returncode == 1
    assert re.search(r"ERROR hub: the store postgresql://govedge@127\.0\.0\.1:\d+/t_\w+ cannot be used "
                     r"\(OperationalError: .*\); stopping\n", hub.log), hub.log[-2000:]
    assert "Traceback" not in hub.log and "rejected:" not in hub.log


def test_one_batch_holding_a_sequence_number_twice_keeps_the_first_and_refuses_other_contents(world, broker):
    """The batch's readings go in a few statements (hub/store.py, _add_readings): a number twice in one batch
    is judged as across batches, leaf by leaf."""
    d1, d2, *_ = world.devices
    m5 = world.message(d1, seq=5)
    other5 = world.message(d1, seq=5, temp=3000)
    first = world.batch(0, [world.message(d2, seq=1)])
    second = world.batch(1, [m5, world.message(d2, seq=1), m5, other5, world.message(d1, seq=6)])
    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()
        publish_batches(broker.port, [first, second])
        wait_until(lambda: stored(world.store_url, 1), what="both batches stored")
    finally:
        hub.stop()
    assert query(world.store_url, "SELECT code, device_id, seq, leaf FROM rejected") == [
        ("conflicting_reading", d1, 5, 3)]
    assert query(world.store_url, "SELECT seq, refused FROM batches ORDER BY seq") == [(0, "[]"), (1, "[3]")]
    assert query(world.store_url, "SELECT device_id, seq, batch_seq, leaf FROM readings ORDER BY batch_seq, leaf") == [
        (d2, 1, 0, 0), (d1, 5, 1, 0), (d1, 6, 1, 4)]
    assert count(world.store_url, "measurements") == 3 * len(wire.decode_unverified(m5).measurements)


def test_a_second_reading_with_a_stored_sequence_number_is_refused_and_listed_not_dropped_silently(world, broker):
    d1, d2, *_ = world.devices
    first = world.batch(0, [world.message(d1, seq=7), world.message(d2)])
    again = world.message(d1, seq=7, temp=3000)  # the device signed another reading with seq 7
    second = world.batch(1, [world.message(d2), again, world.message(d1, seq=8)])
    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()
        publish_batches(broker.port, [first, second, first])  # and the first once more: a plain duplicate
        wait_until(lambda: stored(world.store_url, 1) and "had it already" in hub.log, what="both batches handled")
        assert_up_all_along(hub)
    finally:
        hub.stop()
    (code, reason, payload, device_id, seq), = query(world.store_url,
                                                     "SELECT code, reason, payload, device_id, seq FROM rejected")
    assert (code, payload, device_id, seq) == ("conflicting_reading", again, d1, 7)
    assert reason == (f"batch {GATEWAY}/1, message 1: reading {d1} #7 is here already with other contents (from "
                      f"batch {GATEWAY}/0): the device signed two readings with one sequence number (was its "
                      "counter reset?)")
    assert query(world.store_url, "SELECT seq, refused FROM batches ORDER BY seq") == [(0, "[]"), (1, "[1]")]
    assert count(world.store_url, "readings") == 4
    assert query(world.store_url, f"SELECT batch_seq FROM readings WHERE device_id = '{d1}' AND seq = 7") == [(0,)]
