"""`govedge hub install` into a folder, twice, and the Mosquitto it configured started for real: each
gateway writes only its own batch, epoch and status topics and reads only its own confirmations, the
workers' login reads them all (as the shared subscription the workers use) and confirms to each, no
message larger than the largest batch gets through, and a real hub worker runs from the installed
hub-1.toml."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from govedge.core import topics
from govedge.core.batch import MAX_BATCH_BYTES
from govedge.hub.install import max_publish_packet_bytes
from govedge.tools.dev.broker import free_port
from support.installed import start_installed_broker, tls_client

pytestmark = pytest.mark.e2e


def _install(root: Path, port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "govedge.tools.cli", "hub", "install", "--root", str(root), "--broker-port", str(port),
         "--broker-name", "127.0.0.1", "--gateway", "gw-a", "--gateway", "gw-b", *extra],
        capture_output=True, text=True, timeout=60)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def installed(tmp_path):
    root, port = tmp_path / "root", free_port()
    first = _install(root, port, "--no-self-test")
    assert first.returncode == 0, first.stderr
    return {"root": root, "port": port, "tmp": tmp_path, "first": first,
            "creds": json.loads((root / "etc/govedge/hub/credentials.json").read_text())}


@pytest.fixture
def broker(installed):
    proc = start_installed_broker(installed["root"], installed["tmp"], installed["port"])
    yield installed
    proc.terminate()
    proc.wait(10)


def _login(broker, user: str, on_message=None, **kw):
    ca = broker["root"] / "etc/govedge/hub/tls/ca.pem"
    return tls_client(broker["port"], ca, user, broker["creds"][user], on_message, **kw)


def test_install_twice_changes_nothing_and_hands_each_gateway_its_own_password(installed):
    root = installed["root"]
    before = _tree(root)
    for name in ("etc/govedge/hub-1.toml", "etc/govedge/hub/tls/ca.pem", "etc/govedge/hub/mosquitto/passwd",
                 "etc/govedge/hub/mosquitto/acl", "etc/mosquitto/conf.d/govedge-hub.conf",
                 "etc/systemd/system/govedge-hub@.service", "etc/govedge/gateways.json",
                 "etc/govedge/hub/gateway-passwords/gw-a", "etc/govedge/hub/hub-key.pem",
                 "etc/govedge/hub/hub-key.pub.pem"):
        assert name in before, name
    creds = installed["creds"]
    assert set(creds) == {"hub", "gw-a", "gw-b"} and len(set(creds.values())) == 3
    assert before["etc/govedge/hub/gateway-passwords/gw-a"] == (creds["gw-a"] + "\n").encode()
    for secret in ("etc/govedge/hub/credentials.json", "etc/govedge/hub/tls/ca.key",
                   "etc/govedge/hub/gateway-passwords/gw-b", "etc/govedge/hub/hub-key.pem"):
        assert (root / secret).stat().st_mode & 0o077 == 0, secret
    assert (root / "etc/govedge/hub-1.toml").stat().st_mode & 0o007 == 0  # it holds the workers' password
    second = _install(root, installed["port"], "--no-self-test")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert _tree(root) == before
    # two workers: each its own configuration and client id, the same login
    third = _install(root, installed["port"], "--no-self-test", "--workers", "2")
    assert third.returncode == 0, third.stderr
    ids = [(root / f"etc/govedge/hub-{n}.toml").read_text().split("client_id = ")[1].split("\n")[0] for n in (1, 2)]
    assert ids[0] != ids[1]
    unit = (root / "etc/systemd/system/govedge-hub@.service").read_text()
    assert f"--config {root}/etc/govedge/hub-%i.toml" in unit


def test_a_new_gateway_reloads_the_broker_and_restarts_no_worker(installed):
    # what systemd is asked (tests/tools/test_deb.py runs it against a real systemd)
    from govedge.hub import install

    root = installed["root"]
    result = install.install(install.Options(root=root, broker_port=installed["port"], broker_names=["127.0.0.1"],
                                             gateways=["gw-c"]))
    assert install.service_commands(result) == [
        ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "mosquitto.service"],
        ["systemctl", "reload", "mosquitto.service"], ["systemctl", "enable", "--now", "govedge-hub@1.service"]]
    assert (root / "etc/govedge/hub/gateway-passwords/gw-c").exists()


def test_a_gateway_named_like_the_workers_login_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "install", "--root", str(tmp_path),
                           "--gateway", "hub", "--no-self-test"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "gateway id 'hub' cannot log in to the hub broker" in done.stderr


def test_a_host_is_a_gateway_or_the_hub_not_both(tmp_path):
    # one Mosquitto has one password file and one ACL: the second install refuses, in one line
    root = tmp_path / "root"
    done = _install(root, free_port(), "--no-self-test")
    assert done.returncode == 0, done.stderr
    gateway = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "gateway", "install", "--root", str(root),
                              "--gateway-id", "gw-a", "--hub-host", "127.0.0.1", "--no-self-test"],
                             capture_output=True, text=True, timeout=60)
    assert gateway.returncode == 2 and gateway.stderr.count("\n") == 1, gateway.stderr
    assert "govedge-hub.conf is there: this host is the hub" in gateway.stderr
    assert not (root / "etc/mosquitto/conf.d/govedge.conf").exists()


def _collector():
    got: list[tuple[str, bytes]] = []
    cond = threading.Condition()

    def on_message(client, userdata, msg):
        with cond:
            got.append((msg.topic, msg.payload))
            cond.notify_all()

    def wait_for(item, timeout=10):
        with cond:
            assert cond.wait_for(lambda: item in got, timeout), got

    return got, on_message, wait_for


def _subscribe(client, subscriptions) -> list:
    """Subscribes; the SUBACK's reason codes."""
    done, codes = threading.Event(), []

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        codes.extend(reason_codes)
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe(subscriptions)
    assert done.wait(5)
    return codes


def _publish_reason(client, topic: str, payload: bytes):
    """Publishes QoS 1 and returns the PUBACK's reason (MQTT 5)."""
    reasons, done = {}, threading.Event()

    def on_publish(client, userdata, mid, reason, properties):
        reasons[mid] = reason
        done.set()

    client.on_publish = on_publish
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    deadline = time.monotonic() + 5
    while info.mid not in reasons and time.monotonic() < deadline:
        time.sleep(0.02)
    return reasons[info.mid]


def test_each_gateway_writes_only_its_own_topics_and_reads_only_its_own_confirmations(broker):
    got, on_message, wait_for = _collector()
    hub, reason = _login(broker, "hub", on_message)
    assert not reason.is_failure
    share = "$share/govedge-hub/"  # the workers' shared subscription (govedge.hub.service)
    codes = _subscribe(hub, [(share + topics.ALL_BATCHES, 1), (share + topics.ALL_EPOCHS, 1),
                             (share + topics.ALL_GATEWAY_STATUS, 1)])
    assert [c.is_failure for c in codes] == [False, False, False], codes
    a_got, a_on_message, a_wait_for = _collector()
    gw_a, reason = _login(broker, "gw-a", a_on_message)
    assert not reason.is_failure
    # it subscribes to its own confirmations and to another gateway's: Mosquitto 2.0 grants both and
    # delivers only what the ACL lets it read (below: gw-b's confirmation never reaches gw-a)
    _subscribe(gw_a, [(topics.committed("gw-a"), 1), (topics.committed("gw-b"), 1), ("govedge/#", 1)])
    for topic in (topics.batch("gw-a"), topics.epoch("gw-a"), topics.gateway_status("gw-a")):
        assert not _publish_reason(gw_a, topic, b"own").is_failure
        wait_for((topic, b"own"))
    # another gateway's batch, or a confirmation of its own making: refused, and nothing reaches anyone
    for topic in (topics.batch("gw-b"), topics.committed("gw-a"), topics.committed("gw-b")):
        assert _publish_reason(gw_a, topic, b"forged").value == 0x87, topic
    # the workers confirm to each gateway; only that gateway reads it
    b_got, b_on_message, _ = _collector()
    gw_b, _ = _login(broker, "gw-b", b_on_message)
    assert [c.value for c in _subscribe(gw_b, [(topics.committed("gw-b"), 1)])] == [1]
    assert not _publish_reason(hub, topics.committed("gw-a"), b"stored 0").is_failure
    assert not _publish_reason(hub, topics.committed("gw-b"), b"stored 7").is_failure
    a_wait_for((topics.committed("gw-a"), b"stored 0"))
    deadline = time.monotonic() + 5
    while (topics.committed("gw-b"), b"stored 7") not in b_got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(a_got) == {(topics.committed("gw-a"), b"stored 0")}  # twice: two of its subscriptions match
    assert b_got == [(topics.committed("gw-b"), b"stored 7")]
    assert not [t for t, p in got if p == b"forged"]
    for c in (hub, gw_a, gw_b):
        c.loop_stop()


def test_a_wrong_password_and_an_unknown_gateway_cannot_log_in(broker):
    ca = broker["root"] / "etc/govedge/hub/tls/ca.pem"
    for user, password in (("gw-a", broker["creds"]["gw-b"]), ("gw-c", "whatever")):
        c, reason = tls_client(broker["port"], ca, user, password)
        c.loop_stop()
        assert reason.is_failure and reason.value in (0x86, 0x87), (user, reason)


def test_the_hub_broker_passes_the_largest_batch_and_nothing_larger(broker):
    got, on_message, wait_for = _collector()
    hub, _ = _login(broker, "hub", on_message)
    _subscribe(hub, [("$share/govedge-hub/" + topics.ALL_BATCHES, 1)])
    gw, _ = _login(broker, "gw-a", protocol=paho.MQTTv311)
    topic = topics.batch("gw-a")
    gw.publish(topic, bytes(MAX_BATCH_BYTES), qos=1).wait_for_publish(30)
    gw.publish(topic, bytes(MAX_BATCH_BYTES + 1), qos=1).wait_for_publish(30)  # acknowledged, dropped
    gw.publish(topic, b"after", qos=1).wait_for_publish(10)
    wait_for((topic, b"after"), 30)
    assert [len(p) for _, p in got] == [MAX_BATCH_BYTES, 5]
    cut = threading.Event()
    gw.on_disconnect = lambda *a: cut.set()
    gw.publish(topic, bytes(max_publish_packet_bytes() + 1), qos=1)
    assert cut.wait(30), "the broker kept the connection that sent a packet over its limit"
    gw.loop_stop()
    hub.loop_stop()
    conf = (broker["root"] / "etc/mosquitto/conf.d/govedge-hub.conf").read_text()
    assert f"message_size_limit {MAX_BATCH_BYTES}\n" in conf
    assert f"max_packet_size {max_publish_packet_bytes()}\n" in conf


def test_the_limits_are_documented_as_installed():
    from govedge.hub import install

    text = " ".join(install.__doc__.split())
    assert f"`message_size_limit {MAX_BATCH_BYTES}`" in text
    assert f"`max_packet_size {max_publish_packet_bytes()}`" in text


def test_a_hub_worker_runs_from_the_installed_configuration_and_the_self_test_passes(broker):
    root = broker["root"]
    log_path = broker["tmp"] / "hub.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "hub", "run", "--config",
                                   str(root / "etc/govedge/hub-1.toml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while b"hub: subscribed" not in log_path.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        check = _install(root, broker["port"])  # again, with its self-test against the running broker
        assert check.returncode == 0, check.stdout + check.stderr
        for line in ("[ok  ] hub broker", "[ok  ] gateway gw-a", "[ok  ] gateway gw-b", "[ok  ] store"):
            assert line in check.stdout, check.stdout
    finally:
        worker.terminate()
        worker.wait(20)
