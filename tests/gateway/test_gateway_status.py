"""`govedge gateway status [--json]` (gateway/README.md, "status"): per node what the store holds, the service
told running by its process id and start time, exit status 0 ok, 1 a problem, 2 not running, and a connection
refused by a broker told by its cause, in status and in one log line however often paho tries again.

Real parts throughout: the firmware as a node under MicroPython, Mosquitto brokers, the gateway as the test
rig's service (support.rig) or as its own process (support.deploy), status as a technician runs it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from govedge.core import topics, wire
from govedge.core.registry import Registry
from govedge.gateway import health
from govedge.gateway.clocksync import GatewayClock
from govedge.gateway.install import password_line
from govedge.tools.dev.broker import Mosquitto, free_port
from support import wait_until
from support.deploy import GATEWAY_ID, GatewayProcess
from support.hubkit import World, publish
from support.nodes import VirtualNode
from support.rig import running  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e  # real Mosquitto brokers and sockets

NODE = "esp32-0501"
SYNCHRONIZED = '[verify]\nclock_synchronized = "yes"\n'  # this machine's clock may not be: not this test's point
# the status document's fields, as gateway/README.md lists them
DOCUMENT = {"format", "gateway_id", "at", "service", "parts", "nodes", "readings", "batches", "anchoring", "store",
            "quarantine", "held_back", "problems"}
NODE_FIELDS = {"device_id", "in_registry", "last_seen", "last_seq", "interval_s", "silent", "status_at", "status_seq",
               "health", "uptime_s", "buffer_pending", "buffer_dropped", "time_set", "heap_free_bytes", "vsupply_v",
               "error", "quarantined", "held_back_24h"}


def cli_status(config: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "gateway", "status", "--config", str(config),
                           *flags], capture_output=True, text=True, timeout=60)


def stored(db_path: Path, device: str) -> dict:
    """What the store holds of one device, read with SQL of the test's own."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        last_seq, = db.execute("SELECT max(seq) FROM readings WHERE device_id = ?", (device,)).fetchone()
        seen = db.execute("SELECT received_at FROM readings WHERE device_id = ? AND seq = ?",
                          (device, last_seq)).fetchone()
        record = db.execute("SELECT seq, received_at, message FROM readings WHERE device_id = ? AND kind = 'status' "
                            "ORDER BY received_at DESC LIMIT 1", (device,)).fetchone()
        return {
            "last_seq": last_seq, "last_seen": seen[0] if seen else None,
            "status": None if record is None else (record[0], record[1], wire.decode_unverified(bytes(record[2]))),
            "quarantined": db.execute("SELECT count(*) FROM quarantine WHERE source LIKE ?",
                                      (f"%/{device}/%",)).fetchone()[0],
            "held_back": db.execute("SELECT count(*) FROM held_back JOIN readings ON readings.id = reading_id "
                                    "WHERE readings.device_id = ?", (device,)).fetchone()[0],
        }
    finally:
        db.close()


def delivered(db_path: Path) -> bool:
    """Every reading batched and every batch confirmed by the hub."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT (SELECT count(*) FROM readings WHERE batch_seq IS NULL) = 0 AND "
                          "(SELECT max(seq) FROM batches) IS (SELECT batch_seq FROM cursors WHERE destination = 'hub')"
                          ).fetchone()[0] == 1
    finally:
        db.close()


def test_each_node_in_status_is_what_the_store_holds(running, build_dir, tmp_path):  # noqa: F811
    r = running(clock=GatewayClock("yes"))
    config = tmp_path / "gw" / "gateway.toml"
    chatty, mute = r.world.devices  # one sends readings (one out of range) and garbage; one never a word
    node = VirtualNode(tmp_path / NODE, build_dir, r.world.folder / "registry.json", NODE, r.local.port,
                       status_every=2)  # provisioned into the registry the gateway watches
    r.sub.registry = Registry.load(r.world.folder / "registry.json")  # the hub knows the new node as well
    node.sim(vsupply_mv=3312)
    node.start()
    try:
        publish(r.local.port, [(topics.reading(chatty), r.world.message(chatty)),
                               (topics.reading(chatty), r.world.message(chatty, temp=41250)),  # 412.5 Cel: range
                               (topics.reading(chatty), b"not a signed reading")])
        wait_until(lambda: (stored(r.gw.db_path, NODE)["status"] or (0,))[0] >= 4, what="the node's status records",
                   detail=lambda: node.log[-2000:])
    finally:
        node.kill()
    wait_until(lambda: stored(r.gw.db_path, chatty)["quarantined"] == 1, what="the garbage quarantined")

    def settled():
        before = [stored(r.gw.db_path, d) for d in (NODE, chatty)]
        time.sleep(0.3)
        return before == [stored(r.gw.db_path, d) for d in (NODE, chatty)] and delivered(r.gw.db_path)

    wait_until(settled, what="every message the node sent committed, batched and confirmed by the hub")
    out = cli_status(config, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == DOCUMENT and doc["problems"] == []
    assert doc["service"]["running"] and doc["service"]["pid"] == os.getpid()  # the service is this test process
    nodes = {n["device_id"]: n for n in doc["nodes"]}
    assert set(nodes) == {NODE, chatty, mute} and all(set(n) == NODE_FIELDS for n in nodes.values())

    held = stored(r.gw.db_path, NODE)
    seq, at, record = held["status"]
    n = nodes[NODE]
    assert (n["last_seq"], n["last_seen"], n["status_seq"], n["status_at"]) == (held["last_seq"], held["last_seen"],
                                                                                seq, at)
    assert n["health"] == record.value("health") == "ok"
    assert n["buffer_pending"] == record.value("buffer_pending")
    assert n["heap_free_bytes"] == record.value("heap_free") > 0
    assert n["vsupply_v"] == float(record.value("vsupply")) == 3.312
    assert n["in_registry"] and not n["silent"] and n["quarantined"] == n["held_back_24h"] == 0

    q = stored(r.gw.db_path, chatty)
    assert (nodes[chatty]["last_seq"], nodes[chatty]["quarantined"], nodes[chatty]["held_back_24h"]) == (
        q["last_seq"], q["quarantined"], q["held_back"]) == (1, 1, 1)
    assert nodes[chatty]["status_at"] is None and nodes[chatty]["buffer_pending"] is None  # no status record: unknown
    assert nodes[mute]["last_seen"] is None and nodes[mute]["in_registry"]

    text = cli_status(config).stdout
    assert f"gateway {GATEWAY_ID}: ok" in text
    node_line = next(x for x in text.splitlines() if x.split()[:1] == [NODE])
    assert f"#{held['last_seq']}; ok, 3.31 V, heap {record.value('heap_free')} B free, " \
           f"{record.value('buffer_pending')} in its buffer" in node_line
    assert "no status record yet (buffer unknown); quarantined 1, held back 1" in text
    assert f"{mute}  never heard from (in the registry)" in text

    # an hour later with nothing heard: both nodes that spoke are silent, a problem (exit status 1)
    later = health.status(r.gw.cfg, now=time.time() + 3600)
    assert health.exit_code(later) == 1
    assert sorted(p.split(":")[0] for p in later["problems"]) == [f"node {chatty}", f"node {NODE}"]
    assert f"SILENT for 60 min, #{held['last_seq']}" in health.describe(later)


def test_exit_status_follows_the_process_by_its_id_and_start_time(tmp_path):
    local = Mosquitto(tmp_path / "local-broker").start()
    hub = Mosquitto(tmp_path / "hub-broker").start()
    world = World(tmp_path / "world", devices=1)
    gw = GatewayProcess(tmp_path / "gateway", world.folder / "registry.json", local.port, hub.port,
                        extra=SYNCHRONIZED)
    config = gw.folder / "gateway.toml"
    live_file = gw.folder / "data" / "live.json"
    other = None
    try:
        gw.start()
        gw.wait_for_log("uplink: connected to the hub broker")
        gw.wait_for_log("ingest: subscribed")
        out = cli_status(config)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "service     running for" in out.stdout and f"(process {gw.proc.pid}," in out.stdout
        assert "delivered   no batch made yet" in out.stdout and "#-1" not in out.stdout  # an empty store
        assert "readings    none received yet" in out.stdout

        gw.kill()  # killed: its live.json stays behind
        out = cli_status(config)
        assert out.returncode == 2
        assert f"NOT RUNNING: process {gw.proc.pid} is gone without stopping cleanly" in out.stdout

        other = subprocess.Popen(["sleep", "60"])  # the dead gateway's process id, given to another program
        doc = json.loads(live_file.read_text())
        live_file.write_text(json.dumps({**doc, "pid": other.pid}))
        out = cli_status(config, "--json")
        assert out.returncode == 2
        assert not json.loads(out.stdout)["service"]["running"]
        assert "another program's" in json.loads(out.stdout)["service"]["why"]

        gw.start()  # and stopped cleanly: no live state
        wait_until(lambda: cli_status(config).returncode == 0, what="the restarted gateway running and well")
        gw.stop()
        out = cli_status(config)
        assert out.returncode == 2 and "service     not running (no live state" in out.stdout
    finally:
        if other is not None:
            other.kill()
            other.wait()
        gw.kill()
        local.stop()
        hub.stop()


def test_a_hub_broker_refusing_the_credentials_is_its_cause_in_status_and_one_log_line(tmp_path):
    passwords = tmp_path / "passwords"
    passwords.write_text(password_line(GATEWAY_ID, "the-right-password") + "\n")
    local = Mosquitto(tmp_path / "local-broker").start()
    hub = Mosquitto(tmp_path / "hub-broker", extra_config=f"allow_anonymous false\npassword_file {passwords}\n").start()
    world = World(tmp_path / "world", devices=1)
    gw = GatewayProcess(tmp_path / "gateway", world.folder / "registry.json", local.port, hub.port,
                        extra=SYNCHRONIZED, hub=f'[hub]\nhost = "127.0.0.1"\nport = {hub.port}\nrate_per_s = 0\n'
                                                f'user = "{GATEWAY_ID}"\npassword = "a-wrong-password"\n')
    config = gw.folder / "gateway.toml"
    refused = f"uplink: the hub broker 127.0.0.1:{hub.port} refused the gateway's credentials"
    try:
        gw.start()
        gw.wait_for_log(refused)
        # paho tries again and again (1-2 s, then doubling): three refusals in the broker's log
        wait_until(lambda: hub.log_path.read_text().count("not authorised") >= 3, what="three refused attempts",
                   detail=lambda: hub.log_path.read_text()[-2000:])
        out = cli_status(config)
        assert out.returncode == 1, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        at = next(i for i, x in enumerate(lines) if x.split()[:1] == ["uplink"])
        assert lines[at].startswith(f"  uplink      PROBLEM: the hub broker 127.0.0.1:{hub.port} refused the "
                                    "gateway's credentials (Not authorized); batches wait on disk")
        assert lines[at + 1].strip() == "check [hub] user and password, and that the broker's password file has " \
                                        "that user"
        doc = json.loads(cli_status(config, "--json").stdout)
        uplink = doc["parts"]["uplink"]
        assert not uplink["ok"] and uplink["last_failure"]["code"] == "not_authorized"
        assert any(p.startswith("uplink: the hub broker") for p in doc["problems"])
        assert gw.log.count(refused) == 1  # one line, however many attempts

        # the broker takes the gateway's password now (Mosquitto reads its password file again on SIGHUP)
        passwords.write_text(password_line(GATEWAY_ID, "a-wrong-password") + "\n")
        hub.proc.send_signal(signal.SIGHUP)
        gw.wait_for_log("again after")
        out = cli_status(config)
        assert out.returncode == 0, out.stdout
        assert "the last failure ended" in out.stdout and "refused the gateway's credentials" in out.stdout
        assert gw.log.count(refused) == 1 and gw.log.count("again after") == 1
    finally:
        gw.kill()
        local.stop()
        hub.stop()


def test_a_local_broker_that_is_not_there_is_told_by_its_cause_until_it_comes(tmp_path):
    port = free_port()  # where the local broker will listen, once it runs
    hub = Mosquitto(tmp_path / "hub-broker").start()
    world = World(tmp_path / "world", devices=1)
    gw = GatewayProcess(tmp_path / "gateway", world.folder / "registry.json", port, hub.port, extra=SYNCHRONIZED)
    config = gw.folder / "gateway.toml"
    local = None
    try:
        gw.start()
        gw.wait_for_log(f"ingest: the local broker 127.0.0.1:{port} refused the TCP connection (nothing listens "
                        "there): check [ingest.mqtt] host and port, and that the broker runs")
        gw.wait_for_log("uplink: connected to the hub broker")
        out = cli_status(config)
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"ingest      PROBLEM: the local broker 127.0.0.1:{port} refused the TCP connection (nothing listens " \
               "there); the nodes keep their readings meanwhile" in out.stdout
        local = Mosquitto(tmp_path / "local-broker", port=port).start()
        gw.wait_for_log(f"ingest: subscribed on the local broker 127.0.0.1:{port} again after")
        out = cli_status(config, "--json")
        assert out.returncode == 0, out.stdout
        ingest = json.loads(out.stdout)["parts"]["ingest"]
        assert ingest["ok"] and ingest["last_failure"]["code"] == "refused" and ingest["last_failure"]["attempts"] >= 1
        assert gw.log.count("ingest: the local broker") == 1
    finally:
        gw.kill()
        hub.stop()
        if local is not None:
            local.stop()


def _vm_steps(db_path: Path, cfg) -> int:
    """What building the status document costs SQLite, in steps of its virtual machine (not in time)."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        db.set_progress_handler(count, 100)
        doc = health._from_store(db, cfg, time.time())
    finally:
        db.close()
    assert doc["held_back"]["last_24h"] == 50 and all(n["status_seq"] is not None for n in doc["nodes"])
    return steps[0]


def test_status_costs_no_more_on_a_store_ten_times_larger(tmp_path):
    from govedge.gateway.config import GatewayConfig
    from govedge.gateway.store import Store

    world = World(tmp_path / "world", devices=3)
    message = world.message(world.devices[0])  # a signed message (its contents do not matter here)

    def store_of(folder: Path, per_device: int) -> GatewayConfig:
        cfg = GatewayConfig(GATEWAY_ID, folder / "gateway.key", folder, world.folder / "registry.json")
        store = Store(folder / "gateway.db")
        now = time.time()
        with store:
            for device in world.devices:
                store.db.executemany(
                    "INSERT INTO readings (device_id, seq, kind, node_time, received_at, message, batch_seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((device, seq, "status" if seq % 10 == 0 else "reading", int(now) - per_device + seq,
                      now - per_device + seq, message, seq // 100) for seq in range(per_device)))
                store.db.execute("INSERT INTO devices (device_id, last_seq) VALUES (?, ?)", (device, per_device - 1))
            # held back: one value in ten, all of them days ago but the newest 50 (the same in both stores)
            held = range(1, 3 * per_device, 10)
            store.db.executemany("INSERT INTO held_back (reading_id, name, rule, reason, held_at) "
                                 "VALUES (?, 'temp', 'range', 'out of range', ?)",
                                 ((i, now - (2 * 86400 if n < len(held) - 50 else 60)) for n, i in enumerate(held)))
            store.db.executemany("INSERT INTO batches (seq, created_at, size, root, cose) "
                                 "VALUES (?, ?, 100, x'00', x'00')", ((b, now) for b in range(per_device // 100)))
        store.close()
        return cfg

    small = store_of(tmp_path / "small", 20_000)
    large = store_of(tmp_path / "large", 200_000)
    # a pass over the readings (or the held-back values of 30 days) would cost ten times as much
    assert _vm_steps(large.data_dir / "gateway.db", large) < 1.5 * _vm_steps(small.data_dir / "gateway.db", small) + 50
