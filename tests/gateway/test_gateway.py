"""The gateway end to end: real nodes (MicroPython firmware), a real local
Mosquitto, the gateway as its own process, a real hub broker, and a hub-side
subscriber that verifies every batch and every device signature in it."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import time

import paho.mqtt.client as paho
import pytest

from govedge.core import topics
from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto
from govedge.core.registry import Registry
from support.deploy import GatewayProcess, HubSubscriber
from support.nodes import VirtualNode


@pytest.fixture
def deployment(tmp_path, build_dir):
    """Brokers, registry, gateway (not started), hub subscriber, and a node factory."""
    local = Mosquitto(tmp_path / "local-broker", persistence=True).start()
    hub = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
    registry = tmp_path / "registry.json"
    nodes = []

    def node(device_id, **kw):
        n = VirtualNode(tmp_path / device_id, build_dir, registry, device_id, local.port, **kw)
        nodes.append(n)
        return n

    # nodes are provisioned first: the gateway loads the registry when it starts
    class D:
        pass

    d = D()
    d.local, d.hub, d.registry, d.node, d.tmp = local, hub, registry, node, tmp_path
    d.gateway = None
    d.subscriber = None

    def start_gateway(**settings):
        d.gateway = GatewayProcess(tmp_path / "gateway", registry, local.port, hub.port, **settings).start()
        d.subscriber = HubSubscriber(hub.port, registry, d.gateway.public_key)
        # the gateway's persistent session must exist before nodes publish: from then on the
        # broker keeps their messages for it, whether it runs or not
        d.gateway.wait_for_log("ingest: subscribed")
        return d.gateway

    d.start_gateway = start_gateway
    yield d
    for n in nodes:
        n.kill()
    if d.gateway:
        d.gateway.kill()
    if d.subscriber:
        d.subscriber.close()
    local.stop()
    hub.stop()


def _per_device(readings):
    out = {}
    for device, seq in readings:
        out.setdefault(device, []).append(seq)
    return out


def _delivered_by_node(node) -> int:
    """The node's own record of what the gateway's broker acknowledged: every seq below this."""
    proc = firmware.run_micropython("import counter; print(counter.FileCounter('buffer.dat.sent').load())",
                                    path=[node.build_dir], cwd=node.root)
    return int(proc.stdout)


def test_readings_of_two_nodes_reach_the_hub_in_signed_batches(deployment):
    a = deployment.node("esp32-0101")
    b = deployment.node("esp32-0102", sensors=("bme280", "sds011"))
    b.config["sensors"]["sds011"]["sim_interval_ms"] = 100
    b.write_config()
    a.sim(temp=18.5)
    gw = deployment.start_gateway(extra="[aggregate]\nwindow_s = 1\n")
    a.start()
    b.start()
    sub = deployment.subscriber
    sub.wait_for(lambda: all(len(v) >= 10 for v in _per_device(sub.readings()).values())
                 and len(_per_device(sub.readings())) == 2, what="10 readings of each node")
    for n in (a, b):
        n.kill()
    gw.stop()
    assert not sub.errors
    per = _per_device(sub.readings())
    for device, seqs in per.items():
        assert seqs == sorted(set(seqs)), f"{device}: repeated or out of order"
    assert "batch gw-test-01/0" in gw.log
    # the gateway's aggregates travel in the signed batches: one-second windows of each quantity
    aggs = [a for bt in sub.batches.values() for a in bt.aggregates]
    temp_a = [x for x in aggs if x["device_id"] == "esp32-0101" and x["name"] == "temp"]
    assert temp_a and all(x["min"] == x["max"] == 18.5 and x["count"] >= 1 for x in temp_a)
    assert {x["name"] for x in aggs if x["device_id"] == "esp32-0102"} >= {"pm2_5", "pm10", "temp"}


def _publish_raw(port, topic, payload):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"intruder-{random.random()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _sign_as(key_file, device, seq, value=2100):
    sys.path.insert(0, str(firmware.FIRMWARE_DIR))
    try:
        import config as node_config
        import reading as node_reading
    finally:
        sys.path.pop(0)
    d = node_config.load_key(str(key_file))
    return node_reading.signed_reading(d, device, seq, int(time.time()), [("temp", "Cel", (value, -2))])


def test_forged_replayed_unknown_and_garbled_messages_are_quarantined_while_good_traffic_flows(deployment):
    good = deployment.node("esp32-0201")
    victim = deployment.node("esp32-0202")
    stranger_key = deployment.tmp / "stranger.key"
    stranger_key.write_text("%064x\n" % 0x1234567890ABCDEF)
    gw = deployment.start_gateway()
    good.start()
    sub = deployment.subscriber
    sub.wait_for(lambda: len(sub.readings()) >= 3, what="first readings")
    port = deployment.local.port
    victim_key = victim.root / "device.key"
    _publish_raw(port, topics.reading("esp32-0202"), _sign_as(victim_key, "esp32-0202", 50))  # accepted
    # a number below the last one not accepted yet is taken once (a broker lost it), then it is taken
    _publish_raw(port, topics.reading("esp32-0202"), _sign_as(victim_key, "esp32-0202", 40))  # accepted
    _publish_raw(port, topics.reading("esp32-0202"), _sign_as(victim_key, "esp32-0202", 40, 9999))  # replayed
    _publish_raw(port, topics.reading("esp32-0202"), _sign_as(stranger_key, "esp32-0202", 60))  # forged
    _publish_raw(port, topics.reading("esp32-9999"), _sign_as(stranger_key, "esp32-9999", 1))  # unknown: waits
    _publish_raw(port, topics.reading("esp32-0202"), b"\xd2\x84garbled")  # garbled
    _publish_raw(port, topics.reading("esp32-0201"), _sign_as(victim_key, "esp32-0202", 70))  # wrong topic
    before = len(sub.readings())
    sub.wait_for(lambda: len(sub.readings()) >= before + 5, what="good traffic after the bad messages")
    good.kill()
    gw.stop()
    db = sqlite3.connect(deployment.tmp / "gateway" / "data" / "gateway.db")
    codes = {code: reason for code, reason in db.execute("SELECT code, reason FROM quarantine")}
    assert set(codes) == {"replayed", "bad_signature", "not_cbor", "wrong_topic"}
    assert codes["replayed"] == ("sequence number 40 of 'esp32-0202' was accepted before, or lies more than 65536 "
                                 "below the last accepted one (50)")
    # a device the registry does not know yet waits for a reload (tests/gateway/test_registry_reload.py)
    assert db.execute("SELECT source FROM waiting_for_registry").fetchall() == [(topics.reading("esp32-9999"),)]
    assert ("esp32-0202", 50) in sub.readings() and ("esp32-0202", 40) in sub.readings()


def test_gateway_killed_at_random_moments_loses_nothing_and_repeats_nothing(deployment):
    kills = int(os.environ.get("GOVEDGE_GATEWAY_KILLS", "20"))
    rng = random.Random(4)
    nodes = [deployment.node(f"esp32-03{i:02d}", interval_s=0.05) for i in range(2)]
    gw = deployment.start_gateway(batch_interval_s=0.2, batch_max_readings=20)
    for n in nodes:
        n.start()
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 1.0))
        gw.kill()
        gw.start()
    time.sleep(1)
    for n in nodes:
        n.kill()
    sub = deployment.subscriber
    delivered = {n.device_id: _delivered_by_node(n) for n in nodes}
    # every message the broker acknowledged to a node (readings and status records) reaches the hub
    sub.wait_for(lambda: all(set(range(delivered[d])) <= set(_per_device(sub.readings()).get(d, []))
                             for d in delivered), timeout=60, what="every acknowledged message")
    gw.stop()
    per = _per_device(sub.readings())
    for device, seqs in per.items():
        assert len(seqs) == len(set(seqs)), f"{device}: a reading came twice in distinct batches"
    assert not sub.errors


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # a process that ended meanwhile (a worker of a pool just broken)
        return b""


def _verification_workers(pid: int) -> list[int]:
    children = [int(c) for task in os.listdir(f"/proc/{pid}/task")
                for c in _read(f"/proc/{pid}/task/{task}/children").split()]
    return [c for c in children if b"spawn_main" in _read(f"/proc/{c}/cmdline")]


def test_a_verification_worker_killed_under_load_costs_nothing(deployment):
    nodes = [deployment.node(f"esp32-04{i:02d}", interval_s=0.05) for i in range(2)]
    gw = deployment.start_gateway(extra="[verify]\nworkers = 2\n")
    for n in nodes:
        n.start()
    sub = deployment.subscriber
    rng = random.Random(7)
    for round_ in range(3):
        sub.wait_for(lambda: len(sub.readings()) >= 10 * (round_ + 1), what="readings flowing")
        # the pool broken by the last kill starts again with the next chunk to check
        deadline = time.monotonic() + 20
        while not (workers := _verification_workers(gw.proc.pid)):
            assert time.monotonic() < deadline, "no verification worker is running"
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # it may have ended with its broken pool
            os.kill(rng.choice(workers), 9)
    time.sleep(1)
    for n in nodes:
        n.kill()
    delivered = {n.device_id: _delivered_by_node(n) for n in nodes}
    sub.wait_for(lambda: all(set(range(delivered[d])) <= set(_per_device(sub.readings()).get(d, []))
                             for d in delivered), timeout=60, what="every acknowledged message")
    gw.stop()
    assert "verify: a worker process died" in gw.log
    per = _per_device(sub.readings())
    assert all(len(seqs) == len(set(seqs)) for seqs in per.values())
    assert not sub.errors
    db = sqlite3.connect(deployment.tmp / "gateway" / "data" / "gateway.db")
    assert db.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_hub_broker_down_for_a_while_loses_nothing_and_keeps_order(deployment):
    node = deployment.node("esp32-0401")
    gw = deployment.start_gateway()
    node.start()
    sub = deployment.subscriber
    sub.wait_for(lambda: len(sub.readings()) >= 3, what="first readings")
    deployment.hub.stop()
    time.sleep(3)
    deployment.hub.start()
    time.sleep(2)
    node.kill()
    delivered = _delivered_by_node(node)
    try:
        sub.wait_for(lambda: set(range(delivered)) <= {s for _, s in sub.readings()}, timeout=60,
                     what="the backlog after the outage")
    except AssertionError:
        missing = sorted(set(range(delivered)) - {s for _, s in sub.readings()})
        got = sorted((b.seq, [__import__("govedge.core.wire").core.wire.decode_unverified(m).seq for m in b.messages])
                     for b in sub.batches.values())
        raise AssertionError(f"missing {missing[:20]} of {delivered}; batches {got}\n{gw.log[-1000:]}")
    gw.stop()
    seqs = [s for _, s in sub.readings()]
    assert seqs == sorted(set(seqs))
    assert not sub.errors


def test_the_example_gateway_toml_is_a_valid_configuration():
    from govedge.gateway import config

    cfg = config.load(firmware.FIRMWARE_DIR.parent / "gateway" / "gateway.toml")
    assert cfg.gateway_id == "gw-muenster-01" and cfg.hub.tls and cfg.batch_mode == "raw"
    assert str(cfg.data_dir) == "/var/lib/govedge"
    assert cfg.hub_confirm_timeout_s == 30 and cfg.uplink_rate_per_s == 20


def test_a_confirmation_timeout_that_is_not_a_positive_number_is_named(tmp_path):
    import pytest

    from govedge.core.config import ConfigError
    from govedge.gateway import config

    text = (firmware.FIRMWARE_DIR.parent / "gateway" / "gateway.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace("confirm_timeout_s = 30", "confirm_timeout_s = 0"))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert str(exc.value) == f"{path}: [hub] confirm_timeout_s = 0: expected a number above 0"


def test_metrics_endpoint_and_status_tell_what_the_gateway_did(deployment):
    import subprocess
    import urllib.request

    from govedge.tools.dev.broker import free_port

    port = free_port()
    node = deployment.node("esp32-0501")
    # the clock told synchronized: status's exit code is about the hub here, not this machine's NTP
    gw = deployment.start_gateway(extra=f"[metrics]\nport = {port}\n[verify]\nclock_synchronized = \"yes\"\n")
    node.start()
    _publish_raw(deployment.local.port, topics.reading("esp32-0501"), b"garbage")
    sub = deployment.subscriber
    sub.wait_for(lambda: len(sub.readings()) >= 4, what="first batches")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    metrics = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert metrics["govedge_verified_total"] >= 4
    assert metrics['govedge_quarantined_total{code="not_cbor"}'] == 1
    assert metrics["govedge_uplink_connected"] == 1
    assert metrics["govedge_batches_delivered_total"] >= 1

    def status(exit_code: int | None = 0):
        out = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "gateway", "status", "--config",
                              str(gw.folder / "gateway.toml")], capture_output=True, text=True)
        assert exit_code is None or out.returncode == exit_code, out.stdout + out.stderr
        return out.stdout

    running = status()
    assert "service     running for" in running
    assert f"uplink      connected to the hub broker 127.0.0.1:{deployment.hub.port}" in running
    assert f"ingest      subscribed on the local broker 127.0.0.1:{deployment.local.port}" in running
    deployment.hub.stop()  # the hub goes away: the technician sees it in plain words
    deadline = time.monotonic() + 20
    while f"the hub broker 127.0.0.1:{deployment.hub.port}" not in (hub_down := status(None)) or \
            "uplink      PROBLEM:" not in hub_down:
        assert time.monotonic() < deadline, hub_down
        time.sleep(0.2)
    status(1)  # a problem: exit status 1
    node.kill()
    gw.stop()
    stopped = status(2)
    assert "gateway gw-test-01" in stopped
    assert "service     not running" in stopped
    assert "quarantine  1 messages (not_cbor 1)" in stopped
    assert "from 1 devices" in stopped
    gw.start()
    deadline = time.monotonic() + 20
    while "service     running" not in status(None):
        assert time.monotonic() < deadline, "the restarted gateway never said it runs"
        time.sleep(0.2)
    gw.kill()
    assert "NOT RUNNING: process" in status(2)  # killed: the live state outlives it


def test_full_store_drops_the_oldest_unsent_readings_and_counts_every_one(deployment):
    import urllib.request

    from govedge.tools.dev.broker import free_port

    port = free_port()
    node = deployment.node("esp32-0601", sensors=(), status_every=1, interval_s=0.02)
    # an empty store's 26 pages of 4 KiB (a page per table and index), the 32 kiB shm file the quota counts as
    # well, and about 30 kB of readings
    gw = deployment.start_gateway(extra=f"[store]\nmax_bytes = 170000\n[metrics]\nport = {port}\n")
    gw.wait_for_log("uplink: connected to the hub broker")
    assert deployment.subscriber.subscribed.wait(10)  # the hub-side session exists; the broker keeps it
    deployment.hub.stop()  # nothing can be delivered: unsent data fills the store
    node.start()
    gw.wait_for_log("dropped the", timeout=60)
    node.kill()
    time.sleep(1)
    deployment.hub.start()

    def metric(name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))

    sub = deployment.subscriber
    sub.wait_for(lambda: metric("govedge_queue_batches") == 0 and metric("govedge_queue_readings") == 0,
                 timeout=60, what="the backlog delivered")
    verified, dropped = metric("govedge_verified_total"), metric("govedge_dropped_total")
    # the hub's broker has every batch; the subscriber gets them once its session is back
    sub.wait_for(lambda: len(sub.readings()) + dropped >= verified, timeout=30, what="the batches at the subscriber")
    gw.stop()
    seqs = [s for _, s in sub.readings()]
    assert dropped > 0
    assert len(seqs) == len(set(seqs))
    # every reading the gateway accepted either reached the hub or is counted as dropped
    assert len(seqs) + dropped == verified
    # what was dropped is the oldest: everything that arrived is newer than every gap
    assert seqs == sorted(seqs) and seqs[-1] - seqs[0] + 1 == len(seqs)


def test_wired_node_reaches_the_hub_through_the_gateways_serial_port(deployment):
    from test_gateway_serial_ingest import Cable

    cable = Cable(deployment.tmp)
    node = deployment.node("esp32-0701", transport="serial", serial={"port": cable.node_port})
    node.config.pop("mqtt", None)
    node.write_config()
    gw = deployment.start_gateway(extra=f'[ingest.serial]\nports = ["{cable.gateway_port}"]\n')
    node.start()
    sub = deployment.subscriber
    try:
        sub.wait_for(lambda: len(sub.readings()) >= 6, what="readings over the wire")
    finally:
        node.kill()
        cable.close()
        gw.stop()
    seqs = [s for d, s in sub.readings() if d == "esp32-0701"]
    assert seqs == sorted(set(seqs)) and seqs[0] == 0
    assert f"serial {cable.gateway_port}: open at 115200 baud" in gw.log


def test_uplink_to_a_hub_broker_that_requires_a_client_certificate(deployment, tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from support.deploy import GATEWAY_ID
    from support.nodes import make_ca_and_server_cert

    ca, cert, key = make_ca_and_server_cert(tmp_path / "hub-tls")
    client_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    # the hub trusts a CA of its own for client certificates; it signs the gateway's
    client_ca_key = ec.generate_private_key(ec.SECP256R1())
    client_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway CA")])
    client_ca = (x509.CertificateBuilder().subject_name(client_ca_name).issuer_name(client_ca_name)
                 .public_key(client_ca_key.public_key()).serial_number(1)
                 .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=9))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .sign(client_ca_key, hashes.SHA256()))
    client_cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_ID)]))
                   .issuer_name(client_ca_name).public_key(client_key.public_key()).serial_number(2)
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=9))
                   .sign(client_ca_key, hashes.SHA256()))
    folder = tmp_path / "hub-tls"
    (folder / "client-ca.pem").write_bytes(client_ca.public_bytes(serialization.Encoding.PEM))
    (folder / "gw.pem").write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "gw.key").write_bytes(client_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    tls_hub = Mosquitto(tmp_path / "tls-hub", persistence=True, extra_config=(
        f"cafile {folder / 'client-ca.pem'}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n")).start()
    try:
        # the hub-side subscriber needs a client certificate as well
        import paho.mqtt.client as paho_client

        got = []
        sub = paho_client.Client(paho_client.CallbackAPIVersion.VERSION2, client_id="tls-hub-sub", clean_session=False)
        sub.tls_set(ca_certs=str(ca), certfile=str(folder / "gw.pem"), keyfile=str(folder / "gw.key"))
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("govedge/v1/gateway/+/batch", qos=1)
        sub.on_message = lambda c, u, m: got.append(m.payload)
        sub.connect("127.0.0.1", tls_hub.port)
        sub.loop_start()
        node = deployment.node("esp32-0801")
        hub_tls = (f'[hub]\nhost = "127.0.0.1"\nport = {tls_hub.port}\ntls = true\nca = "{ca}"\n'
                   f'cert = "{folder / "gw.pem"}"\nkey = "{folder / "gw.key"}"\nrate_per_s = 0\n')
        gw = GatewayProcess(tmp_path / "gw-tls", deployment.registry, deployment.local.port, tls_hub.port,
                            hub=hub_tls).start()
        gw.wait_for_log("ingest: subscribed")
        node.start()
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        node.kill()
        gw.stop()
        sub.loop_stop()
        assert got, gw.log[-2000:]
        from govedge.core import batch as batch_mod

        b = batch_mod.verify(got[0], lambda g: [gw.public_key], Registry.load(deployment.registry))
        assert b.gateway_id == GATEWAY_ID and b.size >= 1
        assert "uplink: connected to the hub broker" in gw.log
    finally:
        tls_hub.stop()
