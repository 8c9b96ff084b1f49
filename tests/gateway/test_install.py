"""`govedge gateway install` into a folder, twice, and the Mosquitto it configured started
for real: devices can publish only to their own topics, a wrong password gets nowhere, and
no message larger than the gateway accepts gets through."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from govedge.core import topics, wire
from govedge.tools.dev.broker import free_port
from govedge.gateway.install import max_publish_packet_bytes
from govedge.tools.field.provision import provision
from support.installed import start_installed_broker, tls_client


HUB_PORT = free_port()  # nothing listens there: the self-test says so
LONGEST_ID = "esp32-" + "9" * (wire.MAX_DEVICE_ID_CHARS - len("esp32-"))  # the longest topics a device has


def _install(root: Path, registry: Path, devices: Path, port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "govedge.tools.cli", "gateway", "install", "--root", str(root), "--gateway-id", "gw-inst-01",
         "--registry", str(registry), "--devices", str(devices), "--broker-port", str(port),
         "--broker-name", "127.0.0.1", "--hub-host", "127.0.0.1", "--hub-port", str(HUB_PORT), *extra],
        capture_output=True, text=True, timeout=60)


@pytest.fixture
def installed(tmp_path):
    registry, devices = tmp_path / "registry.json", tmp_path / "devices"
    for device in ("esp32-0101", "esp32-0102", LONGEST_ID):
        provision(device, "esp32", ["bme280"], registry, devices, broker_host="gateway.local", broker_port=1883)
    root, port = tmp_path / "root", free_port()
    first = _install(root, registry, devices, port)
    return {"root": root, "port": port, "registry": registry, "devices": devices, "first": first, "tmp": tmp_path}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_twice_changes_nothing_and_keeps_keys(installed):
    first = installed["first"]
    # the self-test runs against a broker that is not started here: it fails, and says so
    assert "gateway gw-inst-01 installed" in first.stdout, first.stdout + first.stderr
    assert "[FAIL] local broker" in first.stdout and first.returncode == 1
    root = installed["root"]
    before = _tree(root)
    for name in ("etc/govedge/gateway.toml", "etc/govedge/gateway.key", "etc/govedge/tls/broker.pem",
                 "etc/mosquitto/conf.d/govedge.conf", "etc/govedge/mosquitto/passwd", "etc/govedge/mosquitto/acl",
                 "etc/systemd/system/govedge-gateway.service", "etc/systemd/system/govedge-gateway-web.service",
                 "etc/govedge/credentials.json"):
        assert name in before, name
    assert (root / "etc/govedge/gateway.key").stat().st_mode & 0o077 == 0
    assert (root / "etc/govedge/credentials.json").stat().st_mode & 0o077 == 0
    second = _install(root, installed["registry"], installed["devices"], installed["port"], "--no-self-test")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert _tree(root) == before
    # the devices' configs now point at the gateway's broker, with TLS and a credential of their own
    creds = json.loads((root / "etc/govedge/credentials.json").read_text())
    cfg = json.loads((installed["devices"] / "esp32-0101" / "config.json").read_text())
    assert cfg["mqtt"] == {**cfg["mqtt"], "host": "127.0.0.1", "port": installed["port"], "tls": True,
                           "user": "esp32-0101", "password": creds["esp32-0101"], "ca": "ca.der"}
    assert creds["esp32-0101"] != creds["esp32-0102"]
    # a device added to the registry later gets its credential; nothing else moves
    provision("esp32-0103", "esp32", ["bme280"], installed["registry"], installed["devices"])
    third = _install(root, installed["registry"], installed["devices"], installed["port"], "--no-self-test")
    assert third.returncode == 0, third.stderr
    after = _tree(root)
    assert after["etc/govedge/gateway.key"] == before["etc/govedge/gateway.key"]
    assert after["etc/govedge/tls/ca.pem"] == before["etc/govedge/tls/ca.pem"]
    assert "esp32-0103" in json.loads(after["etc/govedge/credentials.json"])


@pytest.fixture
def broker(installed):
    proc = start_installed_broker(installed["root"], installed["tmp"], installed["port"])
    yield installed
    proc.terminate()
    proc.wait(10)


def _client(installed, user: str, password: str, on_message=None,
            protocol=paho.MQTTv5) -> tuple[paho.Client, object]:
    return tls_client(installed["port"], installed["root"] / "etc/govedge/tls/ca.pem", user, password, on_message,
                      protocol)


def test_the_installed_broker_lets_each_device_publish_only_to_its_own_topic(broker):
    creds = json.loads((broker["root"] / "etc/govedge/credentials.json").read_text())
    got: list[str] = []
    arrived = threading.Event()

    def on_message(client, userdata, msg):
        got.append(msg.topic)
        arrived.set()

    gw, reason = _client(broker, "gateway", creds["gateway"], on_message)
    assert not reason.is_failure
    subscribed = threading.Event()
    gw.on_subscribe = lambda *a: subscribed.set()
    gw.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
    assert subscribed.wait(5)
    dev, reason = _client(broker, "esp32-0101", creds["esp32-0101"])
    assert not reason.is_failure
    own = dev.publish(topics.reading("esp32-0101"), b"own", qos=1)
    own.wait_for_publish(5)
    assert arrived.wait(5) and got == [topics.reading("esp32-0101")]
    # another device's topic: the broker refuses it (MQTT 5 PUBACK reason 0x87, not authorized)
    refused = {}
    dev.on_publish = lambda client, userdata, mid, reason, properties: refused.setdefault(mid, reason)
    other = dev.publish(topics.reading("esp32-0102"), b"forged", qos=1)
    other.wait_for_publish(5)
    time.sleep(0.5)
    assert refused[other.mid].value == 0x87, refused
    assert got == [topics.reading("esp32-0101")]  # nothing of it reached the gateway
    dev.loop_stop()
    gw.loop_stop()


def test_the_installed_broker_passes_the_largest_message_and_nothing_larger(broker):
    creds = json.loads((broker["root"] / "etc/govedge/credentials.json").read_text())
    got: list[tuple[str, int]] = []
    arrived = threading.Condition()

    def on_message(client, userdata, msg):
        with arrived:
            got.append((msg.topic, len(msg.payload)))
            arrived.notify_all()

    def wait_for(item):
        with arrived:
            assert arrived.wait_for(lambda: item in got, 10), got

    gw, _ = _client(broker, "gateway", creds["gateway"], on_message)
    subscribed = threading.Event()
    gw.on_subscribe = lambda *a: subscribed.set()
    gw.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
    assert subscribed.wait(5)
    # the largest message a device may send, on the longest topic, MQTT 5: it gets through whole
    longest, _ = _client(broker, LONGEST_ID, creds[LONGEST_ID])
    for topic in (topics.reading(LONGEST_ID), topics.status(LONGEST_ID)):
        longest.publish(topic, bytes(wire.MAX_MESSAGE_BYTES), qos=1).wait_for_publish(5)
        wait_for((topic, wire.MAX_MESSAGE_BYTES))
    longest.loop_stop()
    # MQTT 3.1.1 as the nodes speak it: the broker cannot announce its limit, the sender learns nothing
    dev, _ = _client(broker, "esp32-0101", creds["esp32-0101"], protocol=paho.MQTTv311)
    dev.reconnect_delay_set(0.1, 0.5)
    own = topics.reading("esp32-0101")
    oversize = dev.publish(own, bytes(wire.MAX_MESSAGE_BYTES + 1), qos=1)
    oversize.wait_for_publish(5)
    assert oversize.is_published()  # acknowledged, dropped
    # Mosquitto 2.0.11 at times closes the connection right after that PUBACK ("Bad socket read/write"):
    # the node connects again, and what it sends next gets through either way (paho sends it once connected)
    dev.publish(own, b"after", qos=1)
    wait_for((own, 5))  # in order from one client: the one before it would have come first
    cut = threading.Event()
    dev.on_disconnect = lambda *a: cut.set()
    dev.publish(own, bytes(1_000_000), qos=1)
    assert cut.wait(10), "the broker kept the connection that sent 1 MB"
    dev.loop_stop()
    # the broker goes on serving the other devices
    other, _ = _client(broker, "esp32-0102", creds["esp32-0102"], protocol=paho.MQTTv311)
    other.publish(topics.reading("esp32-0102"), b"still here", qos=1).wait_for_publish(5)
    wait_for((topics.reading("esp32-0102"), 10))
    other.loop_stop()
    gw.loop_stop()
    assert [n for _, n in got] == [wire.MAX_MESSAGE_BYTES, wire.MAX_MESSAGE_BYTES, 5, 10]
    conf = (broker["root"] / "etc/mosquitto/conf.d/govedge.conf").read_text()
    assert f"max_packet_size {max_publish_packet_bytes()}\n" in conf
    assert f"message_size_limit {wire.MAX_MESSAGE_BYTES}\n" in conf


def test_the_broker_limits_are_documented_as_installed():
    from govedge.gateway import install

    for text in (install.__doc__, (Path(__file__).parents[2] / "hardware/INSTALL.md").read_text()):
        text = " ".join(text.split())
        assert f"more than {wire.MAX_MESSAGE_BYTES} bytes" in text
        assert f"`message_size_limit {wire.MAX_MESSAGE_BYTES}`" in text
        assert f"`max_packet_size {max_publish_packet_bytes()}`" in text


def test_a_device_with_a_wrong_password_cannot_connect(broker):
    c, reason = _client(broker, "esp32-0101", "not-its-password")
    c.loop_stop()
    assert reason.is_failure and reason.value in (0x86, 0x87), reason  # bad user name or password / not authorized


def test_the_self_test_passes_the_local_broker_and_names_what_is_missing(broker):
    from govedge.gateway.install import self_test

    results = {name: (ok, text) for name, ok, text in
               self_test(broker["root"] / "etc/govedge/gateway.toml", lambda: (True, "synchronised (test)"))}
    assert results["configuration"][0] and results["local broker"][0], results
    assert results["registry"] == (True, f"3 devices in {broker['root'] / 'etc/govedge/registry.json'}")
    assert results["hub"][0] is False and "unreachable" in results["hub"][1]
    assert results["govchain"][0] is None  # no anchoring configured
    assert results["disk space"][0] and results["clock"][0]


def test_a_node_and_the_gateway_work_through_the_installed_broker(tmp_path, build_dir):
    # the firmware connects with TLS (the installed CA) and its own credential; the gateway with its
    # own; the reading is verified and stored
    from support.nodes import VirtualNode

    registry, port = tmp_path / "registry.json", free_port()
    node = VirtualNode(tmp_path / "esp32-0201", build_dir, registry, "esp32-0201", port)
    root = tmp_path / "root"
    done = _install(root, registry, tmp_path / "esp32-0201-provisioning", port, "--no-self-test")
    assert done.returncode == 0, done.stderr
    db = run_installed(root, tmp_path, port, node, "esp32-0201", 2)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def _stored(db: Path, device: str) -> int:
    """The device's readings in the gateway's store, read-only (the test makes no file beside it that the
    gateway's user could not write); 0 until the gateway has made the store and its tables."""
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM readings WHERE device_id = ?", (device,)).fetchone()[0]
    except sqlite3.OperationalError:  # the store is there, its tables not yet
        return 0
    finally:
        con.close()


def run_installed(root: Path, tmp_path: Path, port: int, node, device: str, readings: int,
                  as_user: tuple[str, ...] = (sys.executable,), env: dict | None = None) -> Path:
    """The node with the credential the install gave it (its provisioning folder), the installed broker
    and `govedge gateway run` from the installed gateway.toml (started by ``as_user``), until the gateway
    has stored ``readings`` of the node's; returns gateway.db."""
    provisioned = tmp_path / f"{device}-provisioning" / device
    node.config["mqtt"] = json.loads((provisioned / "config.json").read_text())["mqtt"]
    node.write_config()
    (node.root / "ca.der").write_bytes((provisioned / "ca.der").read_bytes())
    broker = start_installed_broker(root, tmp_path, port)
    log = open(tmp_path / "gateway.log", "wb")
    gw = subprocess.Popen([*as_user, "-m", "govedge.tools.cli", "gateway", "run", "--config",
                           str(root / "etc/govedge/gateway.toml")], stdout=log, stderr=log, env=env)
    db = root / "var/lib/govedge/gateway.db"
    try:
        node.start()
        node.wait_for_log(r"mqtt: connected", timeout=30)
        deadline = time.monotonic() + 30
        while _stored(db, device) < readings:
            assert gw.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        node.kill()
        gw.terminate()
        gw.wait(20)
        log.close()
        broker.terminate()
        broker.wait(10)
    return db


def test_the_gateway_configures_the_devices_without_ever_holding_their_private_keys(tmp_path):
    # hardware/CHECKLIST.md section 2: the laptop sends the registry and the devices' folders without
    # device.key, the install writes each config's credential, the configs go back next to the keys
    laptop, gateway = tmp_path / "laptop", tmp_path / "gateway"
    laptop.mkdir()
    gateway.mkdir()
    for device in ("esp32-0401", "esp32-0402"):
        provision(device, "esp32", ["bme280"], laptop / "registry.json", laptop / "devices")
    keys = {p: p.read_bytes() for p in laptop.rglob("device.key")}
    assert len(keys) == 2
    sent = subprocess.run(["tar", "-cf", "-", "--exclude=device.key", "registry.json", "devices"], cwd=laptop,
                          capture_output=True, check=True).stdout
    subprocess.run(["tar", "-xf", "-"], cwd=gateway, input=sent, check=True)
    done = _install(gateway / "root", gateway / "registry.json", gateway / "devices", free_port(), "--no-self-test")
    assert done.returncode == 0, done.stderr
    assert "configs updated: esp32-0401, esp32-0402" in done.stdout
    assert not list(gateway.rglob("device.key"))  # not on the gateway, at no moment
    back = subprocess.run(["tar", "-cf", "-", "devices"], cwd=gateway, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-xf", "-"], cwd=laptop, input=back, check=True)
    creds = json.loads((gateway / "root/etc/govedge/credentials.json").read_text())
    for device in ("esp32-0401", "esp32-0402"):
        cfg = json.loads((laptop / "devices" / device / "config.json").read_text())
        assert cfg["mqtt"]["user"] == device and cfg["mqtt"]["password"] == creds[device]
        assert (laptop / "devices" / device / "ca.der").exists()
    assert {p: p.read_bytes() for p in laptop.rglob("device.key")} == keys
