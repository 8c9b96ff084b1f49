"""The device registry: which devices exist and which public keys speak for them.

One JSON file (docs/REGISTRY.md), written by `govedge provision`, loaded by the
gateway, the hub and `govedge verify`. A device keeps every key it ever had:
after a rotation the old key is marked retired, so readings it signed stay
verifiable.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .wire import DEVICE_ID, WireError, public_key_from_sec1
from .errors import GovedgeError

FORMAT = "govedge-registry/1"
BOARDS = ("esp32", "picow", "rpi")
SENSORS = ("bme280", "sds011")


class RegistryError(GovedgeError, ValueError):
    """A registry file or request that cannot be used; the text names the file or device."""

    code = "registry"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeviceKey:
    public_key: str  # SEC 1 uncompressed, hex
    status: str  # "active" or "retired"
    created: str
    retired: str | None = None

    def to_json(self) -> dict:
        d = {"public_key": self.public_key, "status": self.status, "created": self.created}
        if self.retired:
            d["retired"] = self.retired
        return d


@dataclass
class Device:
    device_id: str
    board: str
    sensors: list[str]
    keys: list[DeviceKey] = field(default_factory=list)

    @property
    def active_key(self) -> DeviceKey:
        return next(k for k in self.keys if k.status == "active")

    def to_json(self) -> dict:
        return {"board": self.board, "sensors": self.sensors, "keys": [k.to_json() for k in self.keys]}


def check_device_id(device_id: str) -> None:
    if not DEVICE_ID.match(device_id or ""):
        raise RegistryError(
            f"device id {device_id!r} is not valid: use letters, digits, '.', '_' and '-', "
            "at most 64 characters, starting with a letter or digit"
        )


class Registry:
    def __init__(self, devices: dict[str, Device] | None = None, path: Path | None = None):
        self.devices = devices or {}
        self.path = path
        self._keys: dict[str, list[ec.EllipticCurvePublicKey]] = {}

    # -- loading and saving -------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> "Registry":
        path = Path(path)
        if not path.exists():
            if missing_ok:
                return cls(path=path)
            raise RegistryError(f"registry {path} does not exist (govedge provision creates it)")
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"registry {path} cannot be read: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise RegistryError(f"registry {path} is not a {FORMAT} file")
        devices = {}
        for device_id, entry in (doc.get("devices") or {}).items():
            try:
                check_device_id(device_id)
                keys = [DeviceKey(k["public_key"], k["status"], k["created"], k.get("retired"))
                        for k in entry["keys"]]
                device = Device(device_id, entry["board"], list(entry.get("sensors", [])), keys)
            except (KeyError, TypeError) as exc:
                raise RegistryError(f"registry {path}: device {device_id!r} is malformed ({exc})") from None
            for k in keys:
                if k.status not in ("active", "retired"):
                    raise RegistryError(f"registry {path}: device {device_id!r} has a key with status {k.status!r}")
                try:
                    public_key_from_sec1(bytes.fromhex(k.public_key))
                except (ValueError, WireError) as exc:
                    raise RegistryError(f"registry {path}: device {device_id!r} has a bad public key ({exc})") from None
            if sum(k.status == "active" for k in keys) != 1:
                raise RegistryError(f"registry {path}: device {device_id!r} must have exactly one active key")
            devices[device_id] = device
        return cls(devices, path)

    def to_json(self) -> dict:
        return {"format": FORMAT, "devices": {d: dev.to_json() for d, dev in sorted(self.devices.items())}}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically: a crash leaves either the old or the new registry."""
        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.path = path
        return path

    # -- what the verifiers ask -------------------------------------------------

    def public_keys(self, device_id: str) -> list[ec.EllipticCurvePublicKey]:
        """The device's keys, active first; empty for an unknown device."""
        if device_id not in self._keys:
            device = self.devices.get(device_id)
            if device is None:
                return []
            ordered = sorted(device.keys, key=lambda k: k.status != "active")
            self._keys[device_id] = [public_key_from_sec1(bytes.fromhex(k.public_key)) for k in ordered]
        return self._keys[device_id]

    __call__ = public_keys  # a Registry is a key lookup for wire.verify

    # -- what provisioning does -------------------------------------------------

    def add(self, device_id: str, board: str, sensors: list[str], public_key: bytes) -> Device:
        check_device_id(device_id)
        if device_id in self.devices:
            raise RegistryError(
                f"device {device_id!r} is already provisioned; use --rotate to give it a new key"
            )
        device = Device(device_id, board, sensors, [DeviceKey(public_key.hex(), "active", _now())])
        self.devices[device_id] = device
        return device

    def rotate(self, device_id: str, public_key: bytes, board: str | None = None,
               sensors: list[str] | None = None) -> Device:
        device = self.devices.get(device_id)
        if device is None:
            raise RegistryError(f"device {device_id!r} is not in the registry; nothing to rotate")
        now = _now()
        for k in device.keys:
            if k.status == "active":
                k.status, k.retired = "retired", now
        device.keys.append(DeviceKey(public_key.hex(), "active", now))
        if board:
            device.board = board
        if sensors is not None:
            device.sensors = sensors
        self._keys.pop(device_id, None)
        return device
