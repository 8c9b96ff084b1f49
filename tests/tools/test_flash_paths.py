"""`govedge flash` uploads only the device's own files: what config.json names stays inside the
device's folder, and the config, its broker identity and the registry all name the device flashed.
The board is never touched: every refusal comes before the port is opened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from govedge.tools.field.flash import FlashError, device_files, flash
from govedge.tools.field.provision import provision

DEVICE = "esp32-0061"


@pytest.fixture
def devices(tmp_path) -> Path:
    provision(DEVICE, "esp32", ["bme280"], tmp_path / "registry.json", tmp_path / "devices",
              broker_host="127.0.0.1", broker_port=1883, tls=False)
    (tmp_path / "secret.txt").write_text("the laptop's own file\n")
    return tmp_path / "devices"


def edit(devices: Path, change) -> None:
    path = devices / DEVICE / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def test_a_provisioned_device_gives_its_config_and_key(devices):
    cfg, files = device_files(DEVICE, devices)
    assert cfg["device_id"] == DEVICE and [f.name for f in files] == ["config.json", "device.key"]


@pytest.mark.parametrize("key, name", [
    ("key_file", "/etc/passwd"),
    ("key_file", "../../secret.txt"),
    ("key_file", "../esp32-0062/device.key"),
    ("key_file", "sub/../../../secret.txt"),
    ("key_file", ""),
    ("key_file", 7),
    ("mqtt.ca", "/etc/ssl/certs/ca-certificates.crt"),
    ("mqtt.ca", "../../secret.txt"),
])
def test_a_file_outside_the_device_s_folder_is_refused_naming_the_key(devices, tmp_path, key, name):
    def change(cfg):
        if key == "mqtt.ca":
            cfg["mqtt"]["ca"] = name
        else:
            cfg[key] = name

    edit(devices, change)
    with pytest.raises(FlashError) as refused:
        device_files(DEVICE, devices)
    assert key in str(refused.value) and str(devices / DEVICE) in str(refused.value)


def test_a_link_out_of_the_folder_is_refused(devices, tmp_path):
    (devices / DEVICE / "link.key").symlink_to(tmp_path / "secret.txt")
    edit(devices, lambda cfg: cfg.update(key_file="link.key"))
    with pytest.raises(FlashError, match="key_file = 'link.key' is outside the device's folder"):
        device_files(DEVICE, devices)


def test_a_file_in_a_subfolder_of_the_device_s_folder_is_taken(devices):
    (devices / DEVICE / "keys").mkdir()
    (devices / DEVICE / "device.key").rename(devices / DEVICE / "keys" / "device.key")
    edit(devices, lambda cfg: cfg.update(key_file="keys/device.key"))
    _cfg, files = device_files(DEVICE, devices)
    assert files[1].name == "keys/device.key"


@pytest.mark.parametrize("change, words", [
    (lambda cfg: cfg.update(device_id="esp32-0099"), "its device_id is 'esp32-0099'"),
    (lambda cfg: cfg["mqtt"].update(client_id="govedge-gateway-gw-1"), "mqtt.client_id is 'govedge-gateway-gw-1'"),
    (lambda cfg: cfg["mqtt"].update(topic="govchain/v1/esp32-0099/reading"), "mqtt.topic is"),
])
def test_a_config_naming_another_device_is_refused(devices, change, words):
    edit(devices, change)
    with pytest.raises(FlashError, match=words):
        device_files(DEVICE, devices)


@pytest.mark.parametrize("device_id", ["../devices/esp32-0061", "/tmp", "", "a/b"])
def test_a_device_id_that_is_no_device_id_is_refused(devices, device_id):
    with pytest.raises(FlashError, match="is not a device id"):
        device_files(device_id, devices)


def test_a_device_unknown_to_the_registry_is_refused_before_the_board(devices, tmp_path):
    other = tmp_path / "other-registry.json"
    provision("esp32-0062", "esp32", ["bme280"], other, tmp_path / "elsewhere", broker_host="127.0.0.1",
              broker_port=1883, tls=False)
    with pytest.raises(FlashError, match="not in the registry"):
        flash(DEVICE, "/dev/null-board", devices=devices, registry=other, say=lambda text: None)


def test_the_command_names_the_key_and_uploads_nothing(devices, tmp_path):
    edit(devices, lambda cfg: cfg.update(key_file=str(tmp_path / "secret.txt")))
    out = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "flash", DEVICE, "--port", "/dev/null-board",
                          "--devices", str(devices), "--registry", str(tmp_path / "registry.json")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "key_file" in out.stderr + out.stdout and "outside the device's folder" in out.stderr + out.stdout
    assert "the laptop's own file" not in out.stderr + out.stdout
