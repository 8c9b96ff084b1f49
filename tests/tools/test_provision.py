"""Provisioning makes a key only the device has, and a registry entry that verifies it."""

import json
import stat
import subprocess
import sys

import pytest

from govedge.core import wire
from govedge.tools.field import firmware
from govedge.tools.field.provision import ProvisionError, provision
from govedge.core.registry import Registry, RegistryError


def _provision(tmp_path, device="esp32-0007", **kw):
    kw.setdefault("board", "esp32")
    kw.setdefault("sensors", ["bme280", "sds011"])
    board, sensors = kw.pop("board"), kw.pop("sensors")
    return provision(device, board, sensors, tmp_path / "registry.json", tmp_path / "devices", **kw)


def _sign_with_key_file(folder, seq=1):
    # sign with the provisioned key file exactly as a node does: config.load_key, then reading
    script = (
        "import config, reading\n"
        "d = config.load_key(%r)\n"
        "print(reading.signed_reading(d, 'esp32-0007', %d, 1764300000, [('temp', 'Cel', (2100, -2))]).hex())\n"
        % (str(folder / "device.key"), seq)
    )
    proc = firmware.run_micropython(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return bytes.fromhex(proc.stdout.decode().strip())


def test_private_key_file_is_owner_only_and_verifies_against_the_registry(tmp_path):
    result = _provision(tmp_path)
    folder = tmp_path / "devices" / "esp32-0007"
    key_file = folder / "device.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o600
    registry = Registry.load(tmp_path / "registry.json")
    reading = wire.verify(_sign_with_key_file(folder), registry)
    assert reading.device_id == "esp32-0007"
    assert result["public_key"] == registry.devices["esp32-0007"].active_key.public_key


def test_config_has_the_pins_of_the_board_and_the_device_topics(tmp_path):
    _provision(tmp_path, board="picow", sensors=["bme280"])
    cfg = json.loads((tmp_path / "devices" / "esp32-0007" / "config.json").read_text())
    pins = json.loads((firmware.FIRMWARE_DIR.parent / "hardware" / "pins" / "picow.json").read_text())
    assert cfg["sensors"] == {"bme280": pins["bme280"]}
    assert cfg["mqtt"]["topic"] == "govedge/v1/esp32-0007/reading"
    assert cfg["mqtt"]["status_topic"] == "govedge/v1/esp32-0007/status"


def test_provisioning_an_existing_device_refuses_without_rotate(tmp_path):
    _provision(tmp_path)
    before = (tmp_path / "devices" / "esp32-0007" / "device.key").read_text()
    with pytest.raises(RegistryError, match="already provisioned; use --rotate"):
        _provision(tmp_path)
    assert (tmp_path / "devices" / "esp32-0007" / "device.key").read_text() == before


def test_rotation_keeps_the_old_key_retired_so_old_readings_still_verify(tmp_path):
    _provision(tmp_path)
    folder = tmp_path / "devices" / "esp32-0007"
    old_message = _sign_with_key_file(folder, seq=1)
    _provision(tmp_path, rotate=True)
    new_message = _sign_with_key_file(folder, seq=2)
    registry = Registry.load(tmp_path / "registry.json")
    statuses = [k.status for k in registry.devices["esp32-0007"].keys]
    assert statuses == ["retired", "active"]
    assert wire.verify(old_message, registry).seq == 1
    assert wire.verify(new_message, registry).seq == 2
    # the new key signs differently: it really is a new key
    assert old_message[-64:] != new_message[-64:]


def test_rotation_of_an_unknown_device_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="not in the registry"):
        _provision(tmp_path, rotate=True)


@pytest.mark.parametrize(
    "device, board, sensors, message",
    [
        ("bad id!", "esp32", ["bme280"], "device id 'bad id!' is not valid"),
        ("esp32-0001", "arduino", ["bme280"], "unknown board 'arduino'"),
        ("esp32-0001", "esp32", ["dht22"], "unknown sensors"),
    ],
)
def test_bad_provisioning_requests_name_the_fault(tmp_path, device, board, sensors, message):
    with pytest.raises((ProvisionError, RegistryError), match=message):
        provision(device, board, sensors, tmp_path / "registry.json", tmp_path / "devices")
    assert not (tmp_path / "registry.json").exists()


def test_cli_never_prints_the_private_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "govedge.tools.cli", "provision", "rpi-0003", "--board", "rpi",
         "--registry", str(tmp_path / "registry.json"), "--out", str(tmp_path / "devices")],
        capture_output=True, text=True, env={"GOVEDGE_WIFI_PASSWORD": "street-secret", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    key = (tmp_path / "devices" / "rpi-0003" / "device.key").read_text().strip()
    assert key not in proc.stdout + proc.stderr
    assert "street-secret" not in proc.stdout + proc.stderr
    assert "provisioned rpi-0003" in proc.stdout


def test_damaged_registry_is_reported_with_its_fault(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"format": "govedge-registry/1", "devices": {
        "esp32-0001": {"board": "esp32", "sensors": [], "keys": [
            {"public_key": "04" + "00" * 64, "status": "active", "created": "2026-01-01T00:00:00Z"}]}}}))
    with pytest.raises(RegistryError, match="esp32-0001.*bad public key"):
        Registry.load(path)


def test_tls_needs_the_ca_and_puts_it_on_the_board_as_der(tmp_path):
    from cryptography import x509

    from support.nodes import make_ca_and_server_cert

    with pytest.raises(ProvisionError, match="--tls needs --ca"):
        _provision(tmp_path, tls=True)
    ca, _, _ = make_ca_and_server_cert(tmp_path / "tls")
    _provision(tmp_path, tls=True, ca=ca)
    folder = tmp_path / "devices" / "esp32-0007"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca"] == "ca.der"
    der = x509.load_der_x509_certificate((folder / "ca.der").read_bytes())
    assert der == x509.load_pem_x509_certificate(ca.read_bytes())
