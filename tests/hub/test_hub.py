"""The hub's ingest service with real parts: Mosquitto (MQTT 5 shared subscriptions),
`govedge hub run` as its own processes, SQLite and a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import time

import cbor2
import pytest

from govedge.core import topics
from govedge.hub import export
from govedge.hub.store import HubStore
from support.hubkit import GATEWAY, HubProcess, World, broker, postgres, publish, publish_batches  # noqa: F401
from support import private_key, scalar, wait_until


def _count(url: str, table: str) -> int:
    s = HubStore(url)
    try:
        return s.count(table)
    finally:
        s.close()


def test_batches_are_verified_stored_once_and_bad_ones_rejected_with_their_reason(tmp_path, broker):
    world = World(tmp_path / "w")
    hub = HubProcess(world.hub_toml(broker.port)).start()
    try:
        hub.wait_subscribed()
        good = world.batches(3)
        stranger = private_key(scalar("someone-else"))
        forged_device = world.batch(11, [world.message("esp32-0001", seq=100, key_of="esp32-0002")])
        bad = [
            (topics.batch(GATEWAY), world.batch(10, [world.message("esp32-0001")], key=stranger)),  # forged
            (topics.batch("gw-unknown"), world.batch(0, [world.message("esp32-0002")], gateway="gw-unknown")),  # waits
            (topics.batch(GATEWAY), forged_device),  # a device message the gateway should never have let in: it
            # alone is refused, its batch stored
            (topics.batch("gw-other"), world.batch(12, [world.message("esp32-0003")])),  # wrong topic
            (topics.batch(GATEWAY), world.batch(0, [world.message("esp32-0003")])),  # id 0 again, other contents
            (topics.batch(GATEWAY), b"\xd2\x84garbage"),
        ]
        publish(broker.port, [(topics.batch(GATEWAY), good[0])] + bad
                + [(topics.batch(GATEWAY), b) for b in good[1:]] + [(topics.batch(GATEWAY), good[1])])
        wait_until(lambda: _count(world.store_url, "batches") == 4 and _count(world.store_url, "rejected") == 5,
                   what="4 batches stored and 5 rejected")
        time.sleep(0.5)  # the repeat of batch 1 has been handled too
    finally:
        hub.stop()
    store = HubStore(world.store_url)
    rejections = store.rejections()
    assert sorted(c for c, _ in rejections) == sorted(["bad_signature", "bad_signature",
                                                       "wrong_topic", "conflicting_batch", "not_cbor"])
    reasons = [r for c, r in rejections if c == "bad_signature"]
    assert any(r.startswith("batch signature does not verify with the key of gateway") for r in reasons)
    assert any(r.startswith("batch gw-hub-test/11, message 0: signature does not verify") for r in reasons)
    # a gateway not known yet waits for `hub add-gateway` (tests/hub/test_hub_reload.py)
    assert _count(world.store_url, "waiting_for_gateway") == 1
    assert any("sequence numbers went back" in r for c, r in rejections if c == "conflicting_batch")
    assert store.count("readings") == 12 and store.count("measurements") == 24
    assert "had it already" in hub.log  # the repeat of batch 1
    store.close()


def test_export_writes_exact_values_and_the_signed_originals(tmp_path):
    world = World(tmp_path / "w")
    store = HubStore(world.store_url)
    from govedge.core import batch as batchmod

    batches = world.batches(2, per_batch=3)
    with store.transaction():
        for b in batches:
            store.add_batch(batchmod.verify(b, lambda g: [world.gateway_key.public_key()]))
    rows = list(store.export_rows())
    out = io.BytesIO()
    assert export.write(rows, "csv", out) == 6
    table = list(csv.reader(io.StringIO(out.getvalue().decode())))
    assert table[0] == ["device_id", "seq", "time", "name", "unit", "value", "gateway_id", "batch_seq", "store_id"]
    assert table[1] == ["esp32-0001", "0", "2025-11-29T07:06:40Z", "temp", "Cel", "21.50", GATEWAY, "0", ""]
    assert table[2][3:6] == ["press", "Pa", "100800"]
    out = io.BytesIO()
    export.write(rows, "json", out)
    first = json.loads(out.getvalue().decode().splitlines()[0])
    assert first["measurements"][0] == {"name": "temp", "unit": "Cel", "value": 21.5}
    out = io.BytesIO()
    export.write(rows, "cose", out)
    # a CBOR sequence of the device-signed messages; pycose verifies each, independently of us
    from pycose.keys import EC2Key
    from pycose.keys.curves import P256
    from pycose.messages import Sign1Message

    from support import pycose_with_cbor2_6

    decoder_input = io.BytesIO(out.getvalue())
    messages = []
    while decoder_input.tell() < len(out.getvalue()):
        start = decoder_input.tell()
        cbor2.load(decoder_input)
        messages.append(out.getvalue()[start:decoder_input.tell()])
    assert messages == [r.message for r in rows]
    with pycose_with_cbor2_6():
        decoded = [Sign1Message.decode(m) for m in messages]
    for msg, r in zip(decoded, rows):
        pub = private_key(scalar(r.device_id)).public_key().public_numbers()
        msg.key = EC2Key(crv=P256, x=pub.x.to_bytes(32, "big"), y=pub.y.to_bytes(32, "big"))
        assert msg.verify_signature()
    since = export.parse_time("2025-11-29T07:06:41Z")
    assert {(r.device_id, r.seq) for r in store.export_rows(since=since)} == \
        {(r.device_id, r.seq) for r in rows if r.time >= since}
    store.close()


def test_postgresql_and_sqlite_give_the_same_results(tmp_path, postgres):
    world = World(tmp_path / "w", devices=4)
    from govedge.core import batch as batchmod

    batches = world.batches(6, per_batch=5)
    batches.append(batches[2])  # a duplicate
    outputs = {}
    for url in (str(tmp_path / "same.db"), postgres.new_database()):
        store = HubStore(url)
        stored = []
        for b in batches:
            with store.transaction():
                stored.append(store.add_batch(batchmod.verify(b, lambda g: [world.gateway_key.public_key()])) == {})
        assert stored == [True] * 6 + [False]
        result = {}
        for fmt in export.FORMATS:
            out = io.BytesIO()
            export.write(store.export_rows(since=world.t0 + 3), fmt, out)
            result[fmt] = out.getvalue()
        result["counts"] = [store.count(t) for t in ("batches", "readings", "measurements", "aggregates")]
        outputs[store.dialect] = result
        store.close()
    assert outputs["sqlite"] == outputs["postgresql"]
    assert outputs["sqlite"]["counts"][:3] == [6, 30, 60]


def test_two_hub_workers_sharing_a_subscription_store_each_batch_exactly_once(tmp_path, broker, postgres):
    world = World(tmp_path / "w", store_url=postgres.new_database())
    workers = [HubProcess(world.hub_toml(broker.port, client_id=f"hub-worker-{i}")).start() for i in (1, 2)]
    try:
        for w in workers:
            w.wait_subscribed()
        batches = world.batches(40, per_batch=3)
        publish_batches(broker.port, batches)
        publish_batches(broker.port, batches[:5])  # the gateway sends some again (a lost PUBACK)
        wait_until(lambda: _count(world.store_url, "batches") == 40, what="40 batches stored")
        time.sleep(1)
    finally:
        for w in workers:
            w.stop()
    assert _count(world.store_url, "readings") == 120
    stored_by = [w.log.count(" readings, ") for w in workers]
    assert all(n > 0 for n in stored_by), f"the broker gave one worker everything: {stored_by}"
    assert sum(stored_by) == 40  # each batch stored by one worker, once
    assert _count(world.store_url, "rejected") == 0


def test_a_hub_killed_and_restarted_mid_stream_loses_nothing(tmp_path, broker):
    world = World(tmp_path / "w")
    hub = HubProcess(world.hub_toml(broker.port)).start()
    hub.wait_subscribed()
    rng = random.Random(3)
    batches = world.batches(60, per_batch=2)
    sent = 0
    for round_ in range(4):
        n = rng.randint(8, 18)
        publish_batches(broker.port, batches[sent:sent + n])
        sent += n
        time.sleep(rng.uniform(0.0, 0.3))
        hub.kill()
        publish_batches(broker.port, batches[sent:sent + 3])  # while it is away: the broker keeps them
        sent += 3
        hub.start()
        hub.wait_subscribed(times=round_ + 2)
    publish_batches(broker.port, batches[sent:])
    wait_until(lambda: _count(world.store_url, "batches") == 60, what="all 60 batches stored")
    hub.stop()
    assert _count(world.store_url, "readings") == 120


def test_add_gateway_and_config_errors_are_named(tmp_path):
    world = World(tmp_path / "w")
    toml = world.hub_toml(1883)
    cli = [sys.executable, "-m", "govedge.tools.cli", "hub"]
    new_key = tmp_path / "new.pem"
    from cryptography.hazmat.primitives import serialization

    new_key.write_bytes(private_key(scalar("gw-2")).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    out = subprocess.run(cli + ["add-gateway", "--config", str(toml), "gw-2", str(new_key)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "gw-2: added" in out.stdout, out.stderr
    out = subprocess.run(cli + ["add-gateway", "--config", str(toml), GATEWAY, str(new_key)],
                         capture_output=True, text=True)
    assert "key added" in out.stdout  # the old key is retired, still trusted for old batches
    doc = json.loads((world.folder / "gateways.json").read_text())
    assert [k["status"] for k in doc["gateways"][GATEWAY]["keys"]] == ["retired", "active"]
    toml.write_text(toml.read_text() + "[extra]\nx = 1\n")
    out = subprocess.run(cli + ["run", "--config", str(toml)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == (f"govedge hub run: {toml}: [extra]: unknown section; known: "
                                                  "[anchor.evm], [anchor.rest], [anchor], [hub], [metrics], [mqtt], "
                                                  "[store], [web]\n")
    out = subprocess.run(cli + ["export", "--config", str(world.hub_toml(1883)), "--since", "yesterday"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "'yesterday' is neither a time" in out.stderr
