"""`govedge provision`: a new device's key, registry entry and board config.

Writes, for DEVICE_ID, into OUT/DEVICE_ID/:
  device.key   the P-256 private key (64 hex digits), readable by its owner only
  config.json  the board's configuration (docs/NODE.md), pins from hardware/pins/BOARD.json
and adds the public key to the registry, with the device's position when given (--location, --place).
The private key is never printed.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import topics
from govedge.core.registry import (BOARDS, SENSORS, LocationError, Registry, RegistryError, check_device_id,
                                   check_location, parse_position)
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

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ProvisionError(f"--ca {path}: {exc.strerror or exc} (give the CA certificate the broker's "
                             "certificate chains to, PEM or DER)") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ProvisionError(f"{path} is not an X.509 certificate (PEM or DER): {exc}") from None
    return cert.public_bytes(serialization.Encoding.DER)


def config_values(cfg: dict) -> dict:
    """The values of node_config's keywords a board config holds (what a rotation keeps when not given)."""
    mqtt, wifi = cfg.get("mqtt") or {}, cfg.get("wifi") or {}
    values = {"transport": cfg.get("transport"), "broker_host": mqtt.get("host"), "broker_port": mqtt.get("port"),
              "tls": mqtt.get("tls"), "mqtt_user": mqtt.get("user"), "mqtt_password": mqtt.get("password"),
              "wifi_ssid": wifi.get("ssid"), "wifi_password": wifi.get("password"),
              "interval_s": cfg.get("interval_s"), "buffer_slots": (cfg.get("buffer") or {}).get("slots"),
              "ntp_host": (cfg.get("ntp") or {}).get("host"), "deep_sleep": cfg.get("deep_sleep")}
    return {k: v for k, v in values.items() if v is not None}


_GONE = object()


def _apply_changes(doc: dict, before: dict, after: dict) -> None:
    """Changes in ``doc`` what differs between ``before`` and ``after``, and nothing else (a value edited
    by hand in a board's config.json stays)."""
    for key in before.keys() | after.keys():
        old, new = before.get(key, _GONE), after.get(key, _GONE)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and isinstance(doc.get(key), dict):
            _apply_changes(doc[key], old, new)
        elif new is _GONE:
            doc.pop(key, None)
        else:
            doc[key] = copy.deepcopy(new)


# the firmware's boot check (firmware/config.py) names a config key; the flag that sets it
FLAG_OF_KEY = {"interval_s": ("--interval", "interval_s"), "buffer": ("--buffer-slots", "buffer_slots"),
               "mqtt.port": ("--broker-port", "broker_port"), "mqtt.host": ("--broker-host", "broker_host")}


def check_as_the_board_does(cfg: dict, values: dict) -> None:
    """Refuses a config the board would refuse at boot, with the firmware's own check (one place for its
    bounds), naming the flag that set the value."""
    from govedge.firmware import config as board_config

    try:
        board_config.check(copy.deepcopy(cfg))
    except board_config.ConfigError as exc:
        why = str(exc).removeprefix("config: ")
        for key, (flag, value) in FLAG_OF_KEY.items():
            if why.startswith(key):
                raise ProvisionError(f"{flag} {values.get(value)}: the board would refuse it at boot ({why})") \
                    from None
        raise ProvisionError(f"the board would refuse this config at boot ({why})") from None


def _existing_config(path: Path) -> dict | None:
    """A device's config.json as provisioning wrote it (None if there is none: the rotation makes a new one)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ProvisionError(f"{path} is not valid JSON ({exc}): fix it or move it aside, then rotate again") \
            from None
    if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
        raise ProvisionError(f"{path} is not a {CONFIG_FORMAT} board config: fix it or move it aside, then "
                             "rotate again")
    return doc


def location_of_flags(location: str | None, place: str | None, flag: str = "--location") -> tuple | None:
    """(latitude, longitude, height, place) of --location LAT,LON[,HEIGHT] and --place TEXT, checked as the
    registry checks them; None without --location. A bad value is refused naming its flag (``flag``: how the
    command names the position, e.g. `govedge locate`'s LAT,LON[,HEIGHT])."""
    if location is None:
        if place is not None:
            raise ProvisionError(f"--place {place!r} needs --location LAT,LON[,HEIGHT]: a place is recorded with a "
                                 "position")
        return None
    try:
        latitude, longitude, height = parse_position(location)
    except LocationError as exc:
        raise ProvisionError(f"{flag} {location}: {exc}") from None
    try:
        check_location(latitude, longitude, height, place)
    except LocationError as exc:
        raise ProvisionError(f"--place {exc.value!r}: {exc.why}") from None
    return latitude, longitude, height, place


def provision(device_id: str, board: str, sensors: list[str], registry_path: Path, out: Path,
              rotate: bool = False, ca: Path | None = None, open_wifi: bool = False,
              location: str | None = None, place: str | None = None, **config) -> dict:
    """Make the key, register it, write key and config; returns a summary (no secrets).

    ``config``: node_config's keywords; one that is None was not given: a new device gets its default, a
    rotation keeps the value of the device's config.json (a rotation changes the key and what was given, no
    more). ``open_wifi``: the Wi-Fi network has no password (else a network without one is refused).
    ``location``: the device's position as --location takes it (``LAT,LON[,HEIGHT]``), ``place`` its
    description (--place); a rotation without them keeps the device's locations, with them records a new one
    (the earlier ones stay in its history)."""
    check_device_id(device_id)
    position = location_of_flags(location, place)
    if board not in BOARDS:
        raise ProvisionError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    unknown = [s for s in sensors if s not in SENSORS]
    if unknown or not sensors:
        raise ProvisionError(f"unknown sensors {unknown}; choose from {', '.join(SENSORS)}")
    registry_created = not Path(registry_path).exists()
    if rotate and registry_created:
        raise RegistryError(f"registry {registry_path} does not exist (check --registry): nothing to rotate")
    registry = Registry.load(registry_path, missing_ok=True)
    if device_id in registry.devices and not rotate:
        raise RegistryError(f"device {device_id!r} is already provisioned; use --rotate to give it a new key")
    if rotate and device_id not in registry.devices:
        raise RegistryError(f"device {device_id!r} is not in the registry {registry_path}; nothing to rotate")

    folder = out / device_id
    given = {k: v for k, v in config.items() if v is not None}
    existing = _existing_config(folder / "config.json") if rotate else None
    values = {**config_values(existing or {}), **given}
    if values.get("tls") and not ca and not (existing is not None and (folder / "ca.der").is_file()):
        raise ProvisionError("--tls needs --ca: the certificate of the CA that signed the broker's certificate")
    ca_der = _ca_der(ca) if ca else None
    cfg = node_config(device_id, board, sensors, **values)
    if existing is not None:  # the rotation changes in the old config only what the flags change
        before = node_config(device_id, existing.get("board", board), [s for s in existing.get("sensors", {})
                                                                       if s in SENSORS] or sensors,
                             **config_values(existing))
        cfg, new = copy.deepcopy(existing), cfg
        _apply_changes(cfg, before, new)
    if "wifi" in cfg and cfg["wifi"].get("ssid") and not cfg["wifi"].get("password") and not open_wifi:
        raise ProvisionError(f"--wifi-ssid {cfg['wifi']['ssid']}: no password in $GOVEDGE_WIFI_PASSWORD (set it; "
                             "for a network without a password give --open-wifi)")
    check_as_the_board_does(cfg, values)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
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
    # set with the key: the location's since is the new key's created
    located = registry.locate(device_id, *position, since=registry.devices[device_id].active_key.created) \
        if position else None
    registry.save(registry_path)
    return {
        "device_id": device_id, "board": board, "sensors": sensors,
        "public_key": public.hex(), "folder": str(folder), "registry": str(registry_path),
        "rotated": rotate, "registry_created": registry_created,
        "keys": len(registry.devices[device_id].keys),
        "location": registry.devices[device_id].location,  # None: the device has no position
        "location_recorded": bool(located and located[1]),
    }
