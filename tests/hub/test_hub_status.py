"""The gateway's heartbeat and `govedge hub status`: a quiet site and a dead gateway no longer look the same from
the hub. Signed status records (docs/FORMAT.md, "The gateway's status record") come every heartbeat_s; the hub
keeps each gateway's latest, refuses forged and replayed ones, tells the gateway's backlog as its store holds it,
calls a gateway silent after a few heartbeats without a word and a device after a few of its intervals, and
serves the figures to Prometheus in a form promtool accepts."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from govedge.core import heartbeat, topics
from govedge.core.heartbeat import DeviceSeen
from govedge.gateway.heartbeat import software_version
from govedge.hub import config as hubconfig
from govedge.hub.metrics import REJECTED_CODES
from govedge.hub.status import describe, status
from govedge.hub.store import HubStore
from govedge.tools.dev.broker import Mosquitto, free_port
from support import private_key, scalar, wait_until
from support.deploy import GATEWAY_ID, GatewayProcess
from support.hubkit import GATEWAY, World, hub_beside, postgres, publish  # noqa: F401 - a fixture

from test_hub_keys import query
from test_hub_reload import close, feed, make_hub
from test_hub_store_identity import confirmations

STORE_A, STORE_B = "c3c3c3c3c3c3c3c3", "d4d4d4d4d4d4d4d4"
T = 1_764_500_000  # the gateway's clock in these records: far from the hub's, which must not matter


def record(world: World, seq: int, at: int, devices=(), store: str = STORE_A, key=None, gateway: str = GATEWAY,
           heartbeat_s: int = 60, **state) -> bytes:
    """A status record of the test's gateway, signed (by ``key``: another key forges it)."""
    fields = dict(unbatched=0, unconfirmed=0, oldest_unconfirmed=None, unanchored=0, oldest_unanchored=None,
                  anchor_error=None, free_bytes=5_000_000_000, refusing=False, clock_synchronized=True)
    fields.update(state)
    h = heartbeat.Heartbeat(gateway, store, seq, at, heartbeat_s, "0.1.0", devices=tuple(devices),
                            devices_total=len(devices), **fields)
    return heartbeat.sign(key or world.gateway_key, h)


def _world(tmp_path, store: str, request, devices: int = 2) -> World:
    return World(tmp_path / "w", devices=devices,
                 store_url=request.getfixturevalue("postgres").new_database() if store == "postgresql" else None)


def _cfg(world: World):
    return hubconfig.load(world.hub_toml(1883, workers=0))


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_hub_keeps_each_gateways_latest_status_record_and_refuses_forged_and_replayed_ones(tmp_path, store,
                                                                                              request):
    world = _world(tmp_path, store, request)
    first = record(world, 7 << 32 | 1, T, unbatched=3)
    second = record(world, 7 << 32 | 2, T + 60, unbatched=5)
    hub = make_hub(world)
    sent = confirmations(hub)
    try:
        acks = feed(hub, [
            (topics.gateway_status(GATEWAY), first), (topics.gateway_status(GATEWAY), second),
            (topics.gateway_status(GATEWAY), first),  # replayed: older than the latest
            (topics.gateway_status(GATEWAY), second),  # delivered again: nothing changes, nothing refused
            (topics.gateway_status(GATEWAY), record(world, 7 << 32 | 3, T + 120, unbatched=666,
                                                    key=private_key(scalar("someone-else")))),  # forged
            (topics.gateway_status("gw-other"), record(world, 7 << 32 | 4, T + 130, unbatched=666)),  # not its topic
            (topics.gateway_status("gw-unknown"), record(world, 1, T, gateway="gw-unknown")),
            # a store the gateway had before (an old SD card), replayed with a higher number: signed earlier
            (topics.gateway_status(GATEWAY), record(world, 99 << 32 | 1, T + 30, store=STORE_B, unbatched=666)),
        ])
        assert len(acks) == 8  # every delivery acknowledged: none blocks the ones behind it
        assert [code for (code,) in query(world, "SELECT code FROM rejected ORDER BY id")] == [
            "stale_heartbeat", "bad_signature", "wrong_topic", "unknown_gateway", "stale_heartbeat"]
        assert query(world, "SELECT count(*) FROM waiting_for_gateway") == [(0,)]  # a heartbeat never waits
        assert json.loads(query(world, "SELECT state FROM gateway_status")[0][0])["unbatched"] == 5
        # a replaced store signing later is the gateway's latest, whatever its number
        feed(hub, [(topics.gateway_status(GATEWAY), record(world, 1, T + 180, store=STORE_B, unbatched=9))])
        assert query(world, "SELECT gateway_id, store_id, seq FROM gateway_status") == [(GATEWAY, STORE_B, 1)]
        # a store restored from an old copy numbers lower than before; signed later, it is no replay
        feed(hub, [(topics.gateway_status(GATEWAY), record(world, 0, T + 240, store=STORE_B, unbatched=10))])
        assert query(world, "SELECT store_id, seq FROM gateway_status") == [(STORE_B, 0)]
        assert hub.counters["heartbeats"] == 4 and hub.counters["heartbeat_duplicates"] == 1
        assert hub.rejected_codes == {"stale_heartbeat": 2, "bad_signature": 1, "wrong_topic": 1,
                                      "unknown_gateway": 1}
    finally:
        close(hub)
    assert sent == []  # status records are not confirmed: the gateway keeps none of them
    reason = query(world, "SELECT reason FROM rejected ORDER BY id")[0][0]
    assert f"status record #{7 << 32 | 1} of gateway {GATEWAY!r}" in reason and "a replay" in reason


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_hub_status_tells_the_backlog_and_finds_a_silent_gateway_and_silent_devices(tmp_path, store, request):
    world = _world(tmp_path, store, request, devices=3)
    steady, quiet, unknown_to_records = world.devices
    # the hub holds readings #0 and #1 of the first two, one a second by their own clocks (World.message)
    batches = world.batches(2, per_batch=2)
    hub = make_hub(world)
    try:
        feed(hub, [(topics.batch(GATEWAY), b) for b in batches])
        beat = record(world, 1, T, heartbeat_s=60, unbatched=7, unconfirmed=2, oldest_unconfirmed=T - 50,
                      unanchored=1, oldest_unanchored=T - 300, devices=[
                          DeviceSeen(steady, T - 2, 1, world.t0 + 1),  # 2 s before the record: fine
                          DeviceSeen(quiet, T - 100, 1, world.t0 + 1)])  # 100 s before it: silent
        feed(hub, [(topics.gateway_status(GATEWAY), beat)])
        (received,) = query(world, "SELECT received_at FROM gateway_status")[0]
    finally:
        close(hub)
    doc = status(_cfg(world), now=received + 100)
    assert json.loads(json.dumps(doc)) == doc  # what --json prints and the web page serves
    section = _readme_section("## Status", "## Metrics")  # every field documented, and no more
    assert set(re.findall(r"`\.(\w+)`", section)) == {*doc["gateways"][0], *doc["devices"][0]}
    assert all(f"`{key}`" in section for key in doc if key not in ("gateways", "devices"))
    (g,) = doc["gateways"]
    assert (g["gateway_id"], g["heard_by"], g["silent"], g["heartbeat_s"]) == (GATEWAY, "status record", False, 60)
    assert (g["unbatched"], g["unconfirmed_batches"], g["epochs_unanchored"], g["store_id"]) == (7, 2, 1, STORE_A)
    # the gateway's times in the hub's clock, by when its record came: its own clock is months off
    assert g["oldest_unconfirmed_batch"] == pytest.approx(received - 50)
    assert g["oldest_unanchored_epoch"] == pytest.approx(received - 300)
    devices = {d["device_id"]: d for d in doc["devices"]}
    assert devices[steady]["interval_s"] == 1.0 and devices[steady]["learnt_from"] == "readings"
    assert (devices[steady]["silent"], devices[quiet]["silent"]) == (False, True)
    assert devices[quiet]["silent_for_s"] == 100 and devices[quiet]["gateway_id"] == GATEWAY
    # in the registry only: never seen, nothing to judge by
    assert (devices[unknown_to_records]["last_seen"], devices[unknown_to_records]["silent"]) == (None, False)
    assert doc["problems"] == [f"device {quiet} (gateway {GATEWAY}): silent for 100 s, more than 3 times its "
                               "interval of 1 s"] and not doc["ok"]
    # three heartbeats without a word: silent
    later = status(_cfg(world), now=received + 181)
    assert later["gateways"][0]["silent"]
    assert f"gateway {GATEWAY}: silent for 3 min, more than 3 heartbeats of 60 s (last heard by status record)" \
        in later["problems"]
    text = describe(later)
    assert f"gateway {GATEWAY}  SILENT heard 3 min ago (status record), version 0.1.0, store {STORE_A}" in text
    assert "  backlog     7 readings waiting for a batch, 2 batches not confirmed by the hub (the oldest made " \
           "4 min ago)" in text
    assert f"PROBLEM: device {quiet} (gateway {GATEWAY}): silent for 100 s" in text
    # a multiple of 120 intervals: the device is fine; a gateway in the list never heard from is a problem
    assert status(_cfg(world), now=received + 100, silent_after=120)["ok"]
    from govedge.hub.gateways import Gateways

    gateways = Gateways.load(world.folder / "gateways.json")
    gateways.add("gw-new", private_key(scalar("gw-new")).public_key())
    gateways.save()
    doc = status(_cfg(world), now=received + 100, silent_after=120)
    assert doc["problems"] == ["gateway gw-new: never heard from (it is in the hub's gateways file)"]
    assert [g["gateway_id"] for g in doc["gateways"]] == ["gw-new", GATEWAY]  # the longest silent first


def _readme_section(start: str, end: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "hub" / "README.md").read_text()
    return text[text.index(start):text.index(end)]


def _previous_store(world: World) -> None:
    """A hub store as the version before status records made it (this version's without gateway_status), with a
    batch of the gateway received at 1234.5."""
    HubStore(world.store_url).close()
    if world.store_url.startswith("postgresql://"):
        import psycopg

        db, ph = psycopg.connect(world.store_url, autocommit=True), "%s"
    else:
        db, ph = sqlite3.connect(world.store_url, isolation_level=None), "?"
    db.execute("DROP TABLE gateway_status")
    db.execute(f"INSERT INTO batches (gateway_id, store_id, seq, created, received_at, mode, size, root, cose) "
               f"VALUES ({', '.join([ph] * 9)})", (GATEWAY, STORE_A, 0, 1, 1234.5, "raw", 0, b"\0" * 32, b"x"))
    db.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_hub_store_from_before_status_records_is_migrated_and_knows_when_it_last_had_a_batch(tmp_path, store,
                                                                                            request):
    world = _world(tmp_path, store, request)
    _previous_store(world)
    hub = make_hub(world)  # opens the store: migrated
    try:
        assert query(world, "SELECT gateway_id, last_batch_at, received_at FROM gateway_status") == [
            (GATEWAY, 1234.5, None)]
        doc = status(_cfg(world), now=2000.0)
        assert (doc["gateways"][0]["heard_by"], doc["gateways"][0]["last_heard"]) == ("batch", 1234.5)
        feed(hub, [(topics.gateway_status(GATEWAY), record(world, 1, T))])
    finally:
        close(hub)
    HubStore(world.store_url).close()  # opened again: nothing more to migrate, nothing changed
    assert query(world, "SELECT gateway_id, last_batch_at, seq FROM gateway_status") == [(GATEWAY, 1234.5, 1)]
    assert status(_cfg(world))["gateways"][0]["heard_by"] == "status record"


def _gateway_db(gw: GatewayProcess, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{gw.folder / 'data' / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _hub_status(hub_toml, *flags: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "status", "--config", str(hub_toml),
                           *flags], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


@pytest.mark.e2e
def test_heartbeats_of_a_real_gateway_reach_the_hub_its_backlog_is_its_stores_and_a_stopped_one_falls_silent(
        tmp_path):
    world = World(tmp_path / "world", devices=2)
    local = Mosquitto(tmp_path / "local").start()
    hub_broker = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
    # the gateway's batches go where no hub reads them: never confirmed, they stay its backlog
    gw = GatewayProcess(tmp_path / "gateway", world.folder / "registry.json", local.port, hub_broker.port,
                        batch_interval_s=3600, batch_max_readings=4, extra='[verify]\nclock_synchronized = "yes"\n',
                        hub=f'[hub]\nhost = "127.0.0.1"\nport = {hub_broker.port}\nrate_per_s = 0\nheartbeat_s = 2\n'
                            f'topic = "govedge/v1/gateway/{GATEWAY_ID}/unread"\n')
    hub = hub_beside(tmp_path / "hubside", world.folder / "registry.json", GATEWAY_ID, gw.public_key,
                     hub_broker.port, client_id="hub-status")
    metrics_port = free_port()
    with open(hub.config, "a") as f:
        f.write(f"[metrics]\nport = {metrics_port}\n")
    url = "sqlite://" + str(tmp_path / "hubside" / "hub.db")

    def hub_state() -> dict:
        s = HubStore(url)
        try:
            rows = s.gateway_statuses()
        finally:
            s.close()
        return rows[0].state if rows and rows[0].state else {}

    heard: list[bytes] = []  # the gateway's records as the hub's broker carries them
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="status-listener")
    listener.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.gateway_status(GATEWAY_ID), qos=1)
    listener.on_message = lambda c, u, msg: heard.append(bytes(msg.payload))
    listener.connect("127.0.0.1", hub_broker.port)
    listener.loop_start()
    try:
        hub.start()
        hub.wait_subscribed()
        gw.start()
        gw.wait_for_log("ingest: subscribed")
        wait_until(lambda: hub_state().get("seq"), what="a status record at the hub", detail=lambda: hub.log[-1500:])
        publish(local.port, [(topics.reading(d), world.message(d)) for d in world.devices])  # #0 of each
        wait_until(lambda: hub_state().get("devices_total") == 2, what="both devices in a status record")
        publish(local.port, [(topics.reading(d), world.message(d)) for d in world.devices for _ in range(4)])

        def backlog_at_gateway() -> tuple:
            (unbatched,), = _gateway_db(gw, "SELECT count(*) FROM readings WHERE batch_seq IS NULL")
            return unbatched, *_gateway_db(gw, "SELECT count(*), CAST(min(created_at) AS INTEGER) FROM batches")[0]

        # 10 readings: two batches of 4 (never confirmed), 2 waiting for the next batch
        wait_until(lambda: backlog_at_gateway()[:2] == (2, 2), what="the gateway's backlog")
        wait_until(lambda: (hub_state().get("unbatched"), hub_state().get("unconfirmed_batches"),
                            hub_state().get("oldest_unconfirmed_batch")) == backlog_at_gateway(),
                   what="the hub's view of the backlog equal to the gateway's store")
        code, out = _hub_status(hub.config, "--json")
        doc = json.loads(out)
        (g,) = doc["gateways"]
        (store_id,), = _gateway_db(gw, "SELECT next FROM sequences WHERE name = 'store'")
        assert (g["gateway_id"], g["heard_by"], g["silent"], g["version"], g["store_id"]) == (
            GATEWAY_ID, "status record", False, software_version(), store_id.to_bytes(8, "big", signed=True).hex())
        assert (g["unbatched"], g["unconfirmed_batches"], g["store_refusing"], g["heartbeat_s"]) == (2, 2, False, 2)
        devices = {d["device_id"]: d for d in doc["devices"]}
        assert {d: (devices[d]["gateway_id"], devices[d]["last_seq"]) for d in world.devices} == {
            d: (GATEWAY_ID, 4) for d in world.devices}
        # learnt from the nodes' own times in two records (World.message: one a second), not from the burst
        assert {devices[d]["interval_s"] for d in world.devices} == {1.0}

        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        promtool = subprocess.run(["promtool", "check", "metrics"], input=scraped, capture_output=True, text=True)
        assert promtool.returncode == 0, promtool.stdout + promtool.stderr
        for code_ in REJECTED_CODES:  # every series from the start
            assert f'govedge_hub_rejected_total{{code="{code_}"}} 0.0' in scraped
        assert f'govedge_hub_gateway_unconfirmed_batches{{gateway="{GATEWAY_ID}"}} 2.0' in scraped
        documented = set(re.findall(r"^\| `(govedge_hub_\w+)", _readme_section("## Metrics", "## Export"), re.M))
        assert documented == set(re.findall(r"^# TYPE (govedge_hub_\w+)", scraped, re.M))
        for name in ("govedge_hub_batches_stored_total", "govedge_hub_readings_stored_total",
                     "govedge_hub_duplicates_total", "govedge_hub_gateway_last_heard_timestamp_seconds",
                     "govedge_hub_gateway_oldest_unconfirmed_batch_timestamp_seconds",
                     "govedge_hub_gateway_epochs_unanchored", "govedge_hub_gateway_store_free_bytes"):
            assert f"\n{name}" in scraped, name

        # the nodes stopped sending: within a few of their intervals they are silent, the gateway is not
        assert not [p for p in doc["problems"] if p.startswith("gateway")], doc["problems"]
        wait_until(lambda: _hub_status(hub.config)[0] == 1, what="silent devices")
        code, text = _hub_status(hub.config)
        assert f"PROBLEM: device {world.devices[0]} (gateway {GATEWAY_ID}): silent for" in text, text
        assert f"gateway {GATEWAY_ID}: silent" not in text
        gw.stop()
        wait_until(lambda: f"PROBLEM: gateway {GATEWAY_ID}: silent for" in _hub_status(hub.config)[1], timeout=60,
                   what="the stopped gateway silent after 3 heartbeats")
        code, text = _hub_status(hub.config)
        assert code == 1 and "more than 3 heartbeats of 2 s (last heard by status record)" in text
        # the dead gateway's first record replayed, and a record forged under its name: neither brings it back
        h = heartbeat.verify(heard[-1], lambda g: [gw.public_key])
        forged = heartbeat.sign(private_key(scalar("someone-else")),
                                dataclasses.replace(h, seq=h.seq + 1, time=h.time + 10))
        publish(hub_broker.port, [(topics.gateway_status(GATEWAY_ID), heard[0]),
                                  (topics.gateway_status(GATEWAY_ID), forged)])
        wait_until(lambda: hub.log.count("rejected: ") == 2, what="both refused", detail=lambda: hub.log[-1500:])
        assert "rejected: stale_heartbeat" in hub.log and "rejected: bad_signature" in hub.log
        assert f"PROBLEM: gateway {GATEWAY_ID}: silent for" in _hub_status(hub.config)[1]
    finally:
        listener.loop_stop()
        listener.disconnect()
        hub.stop()
        gw.stop()
        local.stop()
        hub_broker.stop()


def test_hub_status_exits_2_with_one_line_when_the_store_cannot_be_read(tmp_path):
    world = World(tmp_path / "w", devices=1)
    (world.folder / "hub.db").write_bytes(b"this is not a database" * 100)
    proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "status", "--config",
                           str(world.hub_toml(1883))], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"govedge hub status: {world.folder / 'hub.db'}: file is not a database")


def test_a_hub_whose_metrics_port_is_taken_stops_at_the_start_with_one_line_naming_it(tmp_path):
    world = World(tmp_path / "w", devices=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        toml = world.hub_toml(1883)
        toml.write_text(toml.read_text() + f"[metrics]\nport = {port}\n")
        proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "run", "--config", str(toml)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"govedge hub run: [metrics] port {port}: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hostile_status_records_are_refused_one_by_one_and_the_gateways_latest_stays(tmp_path):
    import random

    import cbor2

    from govedge.core import cose

    world = World(tmp_path / "w", devices=1)
    good = record(world, 5, T, unbatched=4, devices=[DeviceSeen(world.devices[0], T - 1, 3, world.t0)])
    body = cbor2.loads(cbor2.loads(good).value[2])
    rng = random.Random(14)
    hostile: list[tuple[str, bytes]] = []
    values = [-1, 2**64, 2**63, "x" * 70, None, [], {}, 1.5, True, b"\x00", {"esp32-0001": [1]},
              {"esp32-0001": [None, -1, None]}, {"no such id!": [1, 2, 3]}]
    for key in body:  # every field of the body given each wrong value, signed by the gateway all the same
        for value in values:
            if value == body[key] and type(value) is type(body[key]):
                continue
            if (key, value) in (("anchor_error", None), ("oldest_unconfirmed", None), ("oldest_unanchored", None),
                                ("clock_synchronized", None), ("clock_synchronized", True), ("refusing", True),
                                ("devices", {})) or (key, type(value)) == ("version", str):
                continue  # values the format allows (refused below as stale, not as malformed)
            hostile.append((topics.gateway_status(GATEWAY),
                            cose.sign1(world.gateway_key, GATEWAY, cbor2.dumps({**body, key: value}))))
    for _ in range(60):  # bytes flipped, cut or spliced
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i:i + rng.randint(1, 3)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
        if bytes(data) != good:
            hostile.append((topics.gateway_status(GATEWAY), bytes(data)))
    hostile += [("govedge/v1/gateway//status", good), (topics.gateway_status("gw-other"), good),
                (topics.gateway_status(GATEWAY), cose.sign1(world.gateway_key, GATEWAY, b"\xff")),
                (topics.gateway_status(GATEWAY), b"")]
    hub = make_hub(world)
    try:
        feed(hub, [(topics.gateway_status(GATEWAY), good)])
        acks = feed(hub, hostile)
        assert len(acks) == len(hostile)  # each acknowledged: none blocks the ones behind it
        codes = [c for (c,) in query(world, "SELECT code FROM rejected ORDER BY id")]
    finally:
        close(hub)
    assert "internal_error" not in codes, [r for r in query(world, "SELECT reason FROM rejected")
                                           if "internal" in r[0]][:3]
    # every hostile delivery refused with a code of the format (the one on a topic outside the layout too)
    assert len(codes) == len(hostile)
    assert set(codes) <= set(REJECTED_CODES) and {"malformed_heartbeat", "wrong_topic", "bad_signature"} <= set(codes)
    assert query(world, "SELECT seq, cose FROM gateway_status") == [(5, good)]
