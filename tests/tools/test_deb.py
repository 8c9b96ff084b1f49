"""The Debian package as a technician installs it: built by tools/package/build-deb.sh, inspected with
dpkg-deb, installed with dpkg into a throwaway copy of this machine whose PID 1 is systemd
(support.throwaway), and then the two documented commands of each role: `govedge hub install` in one
copy, `govedge gateway install` in another, each ending with its services enabled and started by that
systemd and its self-test run against them; the gateway's uplink logs in to the hub's broker with the
password and CA the hub's install handed over."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from govedge.tools.dev.broker import free_port
from govedge.tools.field.provision import provision
from support.installed import tls_client
from support.throwaway import ThrowawayRoot

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GATEWAY = "gw-deb-01"


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(["sh", str(REPO / "tools/package/build-deb.sh"), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    [built] = out.glob("govchain-edge_*_all.deb")
    assert proc.stdout.strip() == str(built)
    return built


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("provisioned")
    provision("esp32-0901", "esp32", ["bme280"], folder / "registry.json", folder / "devices")
    return folder / "registry.json"


def _fresh_host(folder: Path, deb: Path) -> ThrowawayRoot:
    host = ThrowawayRoot(folder)
    try:
        host.put(deb, f"/srv/govedge-test/{deb.name}")
        installed = host.run("dpkg", "-i", f"/srv/govedge-test/{deb.name}", timeout=600)
        assert "Setting up govchain-edge" in installed.stdout
    except BaseException:
        host.close()
        raise
    return host


def test_the_package_carries_the_wheel_and_depends_on_what_an_install_runs(deb):
    info = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Architecture", "Depends"],
                          capture_output=True, text=True, check=True).stdout
    assert "Package: govchain-edge\nArchitecture: all\nDepends: python3 (>= 3.11), python3-venv, mosquitto\n" == info
    contents = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/share/govchain-edge/govchain_edge-0.1.0-py3-none-any.whl" in contents
    assert "./usr/bin/govedge -> /opt/govedge/.venv/bin/govedge" in contents
    postinst = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"[gateway]" in postinst and b"/opt/govedge/.venv" in postinst


def test_installed_with_dpkg_it_runs_from_opt_govedge_with_the_gateways_dependencies_only(deb, tmp_path):
    host = _fresh_host(tmp_path / "host", deb)
    try:
        assert "gateway" in host.run("/opt/govedge/.venv/bin/govedge", "--help").stdout
        assert "gateway" in host.run("govedge", "--help").stdout  # /usr/bin/govedge
        probe = host.run("/opt/govedge/.venv/bin/python", "-c",
                         "import importlib.util as u; print([m for m in ('prometheus_client', 'serial', 'rfc8785', "
                         "'web3', 'psycopg', 'amqtt', 'pytest', 'esptool') if u.find_spec(m)])").stdout.strip()
        assert probe == "['prometheus_client', 'serial', 'rfc8785']"
        # a Debian package the install runs, gone: named in one line, nothing written
        host.run("dpkg", "--remove", "--force-depends", "mosquitto")
        done = host.run("govedge", "gateway", "install", "--gateway-id", GATEWAY, "--hub-host", "127.0.0.1",
                        check=False)
        assert (done.returncode, done.stderr) == (2, "govedge gateway install: the Debian package mosquitto is "
                                                     "missing: sudo apt-get install mosquitto, then run this again\n")
        assert host.run("test", "-e", "/etc/govedge", check=False).returncode == 1
        host.run("dpkg", "-r", "govchain-edge")
        assert host.run("test", "-e", "/opt/govedge", check=False).returncode == 1
    finally:
        host.close()


def test_hub_and_gateway_installs_start_their_services_and_the_gateway_logs_in_to_the_hub(deb, registry, tmp_path):
    hub_port, broker_port = free_port(), free_port()
    hub = _fresh_host(tmp_path / "hub", deb)
    gateway = None
    try:
        hub.put(registry, "/srv/govedge-test/registry.json")
        done = hub.run("govedge", "hub", "install", "--registry", "/srv/govedge-test/registry.json",
                       "--broker-port", str(hub_port), "--broker-name", "127.0.0.1", "--gateway", GATEWAY,
                       check=False, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr + hub.journal("govedge-hub@1")
        for line in ("ran       systemctl enable --now mosquitto.service",
                     "ran       systemctl enable --now govedge-hub@1.service", "[ok  ] hub broker",
                     f"[ok  ] gateway {GATEWAY}", "[ok  ] worker 1           govedge-hub@1.service runs"):
            assert line in done.stdout, done.stdout
        assert hub.run("systemctl", "is-enabled", "govedge-hub@1.service").stdout.strip() == "enabled"
        worker_user = hub.run("ps", "-o", "user=", "-p",
                              hub.run("systemctl", "show", "-p", "MainPID", "--value", "govedge-hub@1").stdout.strip())
        assert worker_user.stdout.strip() == "govedge"  # the service user the install made
        (tmp_path / "hub-ca.pem").write_bytes(hub.read("/etc/govedge/hub/tls/ca.pem"))
        (tmp_path / "hub-password").write_bytes(hub.read(f"/etc/govedge/hub/gateway-passwords/{GATEWAY}"))

        gateway = _fresh_host(tmp_path / "gateway", deb)
        for name in ("hub-ca.pem", "hub-password"):
            gateway.put(tmp_path / name, f"/srv/govedge-test/{name}")
        gateway.put(registry, "/srv/govedge-test/registry.json")
        done = gateway.run("govedge", "gateway", "install", "--gateway-id", GATEWAY,
                           "--registry", "/srv/govedge-test/registry.json", "--broker-port", str(broker_port),
                           "--broker-name", "127.0.0.1", "--hub-host", "127.0.0.1", "--hub-port", str(hub_port),
                           "--hub-ca", "/srv/govedge-test/hub-ca.pem",
                           "--hub-password-file", "/srv/govedge-test/hub-password", check=False, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr + gateway.journal("govedge-gateway")
        print(done.stdout)  # the report README.md shows ("Installing a gateway"): pytest -rP prints it
        for line in ("ran       systemctl enable --now mosquitto.service",
                     "ran       systemctl enable --now govedge-gateway.service",
                     "ran       systemctl enable --now govedge-gateway-web.service",
                     "[ok  ] service        govedge-gateway runs (process",
                     f"[ok  ] status page    http://127.0.0.1:8080/ shows gateway {GATEWAY}",
                     "[ok  ] local broker   the running gateway",
                     "[ok  ] hub"):
            assert line in done.stdout, done.stdout
        assert gateway.run("systemctl", "is-enabled", "govedge-gateway.service").stdout.strip() == "enabled"
        # the uplink logs in to the hub's broker with what the hub's install handed over
        deadline = time.monotonic() + 60
        while True:
            live = json.loads(gateway.read("/var/lib/govedge/live.json"))
            if (live["parts"].get("uplink") or {}).get("ok"):
                break
            assert time.monotonic() < deadline, live
            time.sleep(0.5)
        # a second install changes nothing and restarts nothing
        again = gateway.run("govedge", "gateway", "install", "--gateway-id", GATEWAY, "--hub-host", "127.0.0.1",
                            "--hub-port", str(hub_port), "--broker-port", str(broker_port),
                            "--broker-name", "127.0.0.1", "--no-self-test", check=False, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in again.stdout and "systemctl restart" not in again.stdout
        # a device new in the registry: its login is there after a reload of Mosquitto, not a restart,
        # and the gateway (which rereads its registry by itself) goes on without one
        pid = gateway.run("systemctl", "show", "-p", "MainPID", "--value", "govedge-gateway").stdout.strip()
        provision("esp32-0902", "esp32", ["bme280"], registry, registry.parent / "devices")
        gateway.put(registry, "/srv/govedge-test/registry.json")
        again = gateway.run("govedge", "gateway", "install", "--gateway-id", GATEWAY, "--hub-host", "127.0.0.1",
                            "--hub-port", str(hub_port), "--broker-port", str(broker_port), "--broker-name",
                            "127.0.0.1", "--registry", "/srv/govedge-test/registry.json", "--no-self-test",
                            check=False, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "ran       systemctl reload mosquitto.service" in again.stdout, again.stdout
        assert "systemctl restart" not in again.stdout, again.stdout
        password = json.loads(gateway.read("/etc/govedge/credentials.json"))["esp32-0902"]
        (tmp_path / "gateway-ca.pem").write_bytes(gateway.read("/etc/govedge/tls/ca.pem"))
        deadline = time.monotonic() + 30
        while True:  # the reload is a signal: Mosquitto rereads its password file when it gets to it
            node, reason = tls_client(broker_port, tmp_path / "gateway-ca.pem", "esp32-0902", password)
            node.loop_stop()
            node.disconnect()
            if not reason.is_failure:
                break
            assert time.monotonic() < deadline, reason
            time.sleep(0.5)
        assert gateway.run("systemctl", "show", "-p", "MainPID", "--value", "govedge-gateway").stdout.strip() == pid
    finally:
        hub.close()
        if gateway is not None:
            gateway.close()
