"""`govedge provision`: a new device's key, registry entry and board config.

Writes, for DEVICE_ID, into OUT/DEVICE_ID/:
  device.key   the P-256 private key (64 hex digits), readable by its owner only
  config.json  the board's configuration (docs/NODE.md), pins from hardware/pins/BOARD.json
and adds the public key to the registry. The private key is never printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import topics
from govedge.core.registry import BOARDS, SENSORS, Registry, RegistryError, check_device_id
from govedge.core.errors import GovedgeError

# hardware/ sits beside tools/ both in the checkout and in an installed package, where the pin
# maps are package data (govedge/hardware/pins; pyproject.toml maps govedge.hardware to hardware/)
PINS_DIR = Path(__file__).resolve().parents[2] / "hardware" / "pins"
CONFIG_FORMAT = "govedge-node/1"


class ProvisionError(GovedgeError, ValueError):
    code = "provision"


def board_pins(board: str) -> dict:
    path = PINS_DIR / f"{board}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvisionError(f"no pin map for board {board!r} ({path})") from None


def _write_private(path: Path, text: str) -> None:
    # created with mode 0600 from the start: the key is never readable by others
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, doc: dict, mode: int = 0o600) -> None:
    # the config holds the Wi-Fi and broker passwords: owner only
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def node_config(device_id: str, board: str, sensors: list[str], *, transport: str = "mqtt",
                broker_host: str = "gateway.local", broker_port: int = 1883, tls: bool = False,
                mqtt_user: str | None = None, mqtt_password: str | None = None,
                wifi_ssid: str | None = None, wifi_password: str | None = None,
                interval_s: int = 60, buffer_slots: int = 256, ntp_host: str = "pool.ntp.org",
                deep_sleep: bool = False) -> dict:
    pins = board_pins(board)
    sensor_specs = {name: dict(pins[name]) for name in sensors}
    if "sds011" in sensor_specs and interval_s >= 90:
        # duty cycling: the laser lives about 8000 hours; 30 s of airflow before each reading
        sensor_specs["sds011"]["warmup_s"] = 30
    cfg = {
        "format": CONFIG_FORMAT,
        "device_id": device_id,
        "board": board,
        "transport": transport,
        "interval_s": interval_s,
        "status_every": 10,
        "sensors": sensor_specs,
        "buffer": {"slots": buffer_slots, "slot_bytes": 384},
        "seq_block": 1 if deep_sleep else 16,
        "watchdog_s": 120,
        "deep_sleep": deep_sleep,
        "key_file": "device.key",
        "ntp": {"host": ntp_host},
    }
    if transport == "mqtt":
        cfg["mqtt"] = {
            "host": broker_host, "port": broker_port, "tls": tls,
            "user": mqtt_user, "password": mqtt_password, "keepalive": 60,
            "client_id": device_id,
            "topic": topics.reading(device_id), "status_topic": topics.status(device_id),
            "ack_topic": topics.ack(device_id),
        }
        if tls:
            cfg["mqtt"]["ca"] = "ca.der"
        if board != "rpi":
            cfg["wifi"] = {"ssid": wifi_ssid, "password": wifi_password}
    else:
        cfg["serial"] = dict(pins["gateway_serial"])
    if pins.get("vsupply"):
        cfg["vsupply"] = dict(pins["vsupply"])
    return cfg


def _ca_der(path: Path) -> bytes:
    from cryptography import x509

    data = Path(path).read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ProvisionError(f"{path} is not an X.509 certificate (PEM or DER): {exc}") from None
    return cert.public_bytes(serialization.Encoding.DER)


def provision(device_id: str, board: str, sensors: list[str], registry_path: Path, out: Path,
              rotate: bool = False, ca: Path | None = None, **config) -> dict:
    """Make the key, register it, write key and config; returns a summary (no secrets)."""
    check_device_id(device_id)
    if board not in BOARDS:
        raise ProvisionError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    unknown = [s for s in sensors if s not in SENSORS]
    if unknown or not sensors:
        raise ProvisionError(f"unknown sensors {unknown}; choose from {', '.join(SENSORS)}")
    registry = Registry.load(registry_path, missing_ok=True)
    if device_id in registry.devices and not rotate:
        raise RegistryError(f"device {device_id!r} is already provisioned; use --rotate to give it a new key")
    if rotate and device_id not in registry.devices:
        raise RegistryError(f"device {device_id!r} is not in the registry; nothing to rotate")

    if config.get("tls") and not ca:
        raise ProvisionError("--tls needs --ca: the certificate of the CA that signed the broker's certificate")
    ca_der = _ca_der(ca) if ca else None
    cfg = node_config(device_id, board, sensors, **config)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    folder = out / device_id
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    # the key is on disk before the registry names it: a crash in between leaves
    # an unregistered key, never a registered key nobody has
    _write_private(folder / "device.key", f"{key.private_numbers().private_value:064x}\n")
    _write_json(folder / "config.json", cfg)
    if ca_der:
        (folder / "ca.der").write_bytes(ca_der)
    if rotate:
        registry.rotate(device_id, public, board=board, sensors=sensors)
    else:
        registry.add(device_id, board, sensors, public)
    registry.save(registry_path)
    return {
        "device_id": device_id, "board": board, "sensors": sensors,
        "public_key": public.hex(), "folder": str(folder), "registry": str(registry_path),
        "rotated": rotate,
        "keys": len(registry.devices[device_id].keys),
    }
