"""The device registry: which devices exist and which public keys speak for them.

One JSON file (docs/NODE.md, "The registry"), written by `govedge provision`, loaded by the
gateway, the hub and `govedge verify`. A device keeps every key it ever had:
after a rotation the old key is marked retired, so readings it signed before
the rotation stay verifiable; `govedge revoke` marks a leaked key revoked.

What a key that is not the active one may still sign (docs/SECURITY.md, "Key
lifecycle") is ``KeyRule.refusal``: a retired key only readings timed before its
rotation and numbered below the first reading under a newer key (the boundary,
learnt by the gateway and the hub, or written as ``valid_below_seq``); a revoked
key only readings timed before ``revoked_since`` (and below the boundary).

A device may also have a position (docs/NODE.md, "Locations"): WGS 84 latitude and longitude in decimal
degrees (EPSG:4326), optionally its height in metres and a short description of the place, each with the
time it was set. A station that is moved keeps where it was before, so that its readings stay tied to
the place they were measured at: ``locations`` is a history, newest last, the current one the last.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
    return datetime.datetime.now(datetime.timezone.utc).strftime(TIME_FORMAT)


STATUSES = ("active", "retired", "revoked")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: str) -> float:
    """Seconds since 1970 of a registry time (UTC, ``2026-11-29T06:01:25Z``)."""
    return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc).timestamp()


class KeyRule(NamedTuple):
    """What one key of a signer may still sign; the gateway and the hub ask it of every verified message."""

    key_id: str  # the first 16 hex digits of the key's x coordinate: names the key in stores and refusals
    status: str  # "active", "retired" or "revoked"
    until: float | None  # retired: the rotation's time; revoked: revoked_since (seconds since 1970)
    valid_below_seq: int | None  # written in the registry (a learnt boundary may be lower)

    def refusal(self, seq: int, time: float | None, learnt_below: int | None = None,
                what: str = "reading", code: str = "") -> tuple[str, str] | None:
        """None if a message of this key with this sequence number and signed time is valid; else
        (``retired_key`` or ``revoked_key``, why). ``learnt_below``: the first sequence number seen under a
        newer key. A retired key's message without a time passes until that boundary is known; a revoked
        key's never does."""
        if self.status == "active":
            return None
        below = self.valid_below_seq
        if learnt_below is not None and (below is None or learnt_below < below):
            below = learnt_below
        word = "retired" if self.status == "retired" else "revoked"
        since = _show_time(self.until)
        if time is not None and self.until is not None and time >= self.until:
            why = f"its time {_show_time(time)} is not before the key was {word} ({since})"
        elif time is None and self.status == "revoked":
            why = f"it has no time, so nothing shows it was made before the key was revoked ({since})"
        elif below is not None and seq >= below:
            why = f"its sequence number {seq} is not below {below}, where the newer key took over"
        else:
            return None
        return (code or f"{word}_key", f"{what} #{seq} is signed by the {word} key {self.key_id}: {why}")


def _show_time(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(TIME_FORMAT)


@dataclass
class DeviceKey:
    public_key: str  # SEC 1 uncompressed, hex
    status: str  # "active", "retired" or "revoked"
    created: str
    retired: str | None = None
    valid_below_seq: int | None = None  # retired or revoked: readings of this key must be numbered below it
    revoked: str | None = None  # when `govedge revoke` was run
    revoked_since: str | None = None  # nothing this key signed from then on is valid

    def to_json(self) -> dict:
        d = {"public_key": self.public_key, "status": self.status, "created": self.created}
        for name in ("retired", "valid_below_seq", "revoked", "revoked_since"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def rule(self) -> KeyRule:
        # a retired key revoked later keeps the earlier of its two ends
        ends = [parse_time(t) for t in (self.retired, self.revoked_since if self.status == "revoked" else None) if t]
        return KeyRule(self.key_id, self.status, min(ends) if ends else None, self.valid_below_seq)


def key_id(public_key_hex: str) -> str:
    """A key's short name: the first 16 hex digits of its x coordinate (after the 04 of SEC 1)."""
    return public_key_hex[2:18]


# the bounds of a position (WGS 84, EPSG:4326); a height outside them is a typo (a value in feet, a sign lost)
LATITUDE = (-90, 90)
LONGITUDE = (-180, 180)
HEIGHT_M = (-500, 9000)
PLACE_MAX = 200  # characters of a location's description of the place
LOCATION_FIELDS = ("latitude", "longitude", "height", "place", "since")
# one number of LAT,LON[,HEIGHT]: decimal, with a point (a comma separates the numbers)
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")  # ASCII digits only: \d takes any script's


class LocationError(RegistryError):
    """A position or place that cannot be recorded; the text names the field and its value (the caller adds the
    file, device or flag): ``latitude 91 is outside -90..90 (...)``."""

    def __init__(self, name: str, value, why: str):
        self.name, self.value, self.why = name, value, why  # why: what follows the value, e.g. "is outside ..."
        super().__init__(f"{name} {_shown(value)} {why}" if value is not _NO_VALUE else f"{name} {why}")


_NO_VALUE = object()


@dataclass
class Location:
    """Where a device stood from ``since`` on (until the next location of its history)."""

    latitude: float  # WGS 84 decimal degrees, north positive
    longitude: float  # WGS 84 decimal degrees, east positive
    height: float | None  # metres
    place: str | None  # e.g. "Domplatz, Münster, lamp post 12"
    since: str  # registry time (UTC)

    def to_json(self) -> dict:
        d = {"latitude": self.latitude, "longitude": self.longitude}
        if self.height is not None:
            d["height"] = self.height
        if self.place is not None:
            d["place"] = self.place
        d["since"] = self.since
        return d

    def same_position(self, other: "Location") -> bool:
        return (self.latitude, self.longitude, self.height, self.place) == (
            other.latitude, other.longitude, other.height, other.place)

    def describe(self) -> str:
        """One line for a technician: ``51.962944, 7.625519, 62 m (Domplatz, ...)``."""
        text = f"{_number(self.latitude)}, {_number(self.longitude)}"
        if self.height is not None:
            text += f", {_number(self.height)} m"
        return text + (f" ({self.place})" if self.place is not None else "")


def _number(value: float) -> str:
    return repr(value)  # as the file holds it: 62 stays 62, 52.0 stays 52.0


def _shown(value) -> str:
    # a value in an error: repr (control characters escaped, one line), cut short
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_location(latitude, longitude, height=None, place=None) -> None:
    """Refuses what is not a position on Earth (LocationError naming the field and the value): numbers only
    (no bool, no NaN or infinity), latitude -90..90, longitude -180..180, height -500..9000 m; a place of at
    most 200 characters without control characters."""
    for name, value, (low, high), what in (
            ("latitude", latitude, LATITUDE, "WGS 84 decimal degrees, north positive"),
            ("longitude", longitude, LONGITUDE, "WGS 84 decimal degrees, east positive"),
            ("height", height, HEIGHT_M, "metres")):
        if value is None and name == "height":
            continue
        if type(value) not in (int, float) or not math.isfinite(value):
            raise LocationError(name, value, f"is not a number ({what})")
        if not low <= value <= high:
            raise LocationError(name, value, f"is outside {low}..{high} ({what})")
    if place is None:
        return
    if type(place) is not str:
        raise LocationError("place", place, "is not text")
    if not place.strip():
        raise LocationError("place", place, "is empty (leave it out instead)")
    if len(place) > PLACE_MAX:
        raise LocationError("place", place, f"is {len(place)} characters long; at most {PLACE_MAX}")
    bad = next((c for c in place if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise LocationError("place", place, f"has a control character (U+{ord(bad):04X}); write it on one "
                            "line")


def parse_position(text: str) -> tuple[float, float, float | None]:
    """``LAT,LON[,HEIGHT]`` as a technician types it (``51.962944,7.625519,62``): decimal degrees and metres
    with a point; checked by check_location. LocationError says what is wrong with it."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise LocationError("position", text, "is not LAT,LON or LAT,LON,HEIGHT (decimal degrees with a "
                            "point, e.g. 51.962944,7.625519,62)")
    for name, part in zip(("latitude", "longitude", "height"), parts):
        if not _DECIMAL.fullmatch(part.strip()):
            raise LocationError(name, part, "is not a decimal number (LAT,LON[,HEIGHT]: degrees and metres with a "
                                "point, e.g. 51.962944,7.625519,62)")
    numbers = [float(p) if "." in p else int(p) for p in parts]  # 62 stays 62 in the file, not 62.0
    latitude, longitude, height = numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None
    check_location(latitude, longitude, height)
    return latitude, longitude, height


def _location_from_json(entry) -> Location:
    if not isinstance(entry, dict):
        raise LocationError("location", entry, "is not an object")
    unknown = [k for k in entry if k not in LOCATION_FIELDS]
    if unknown:
        raise LocationError("location", _NO_VALUE, f"has the unknown field {unknown[0]!r} (its fields: "
                                f"{', '.join(LOCATION_FIELDS)})")
    for name in ("latitude", "longitude", "since"):
        if name not in entry:
            raise LocationError("location", _NO_VALUE, f"has no {name}")
    for name in ("height", "place"):  # optional means left out, not null (a file that saves as it loads)
        if name in entry and entry[name] is None:
            raise LocationError(name, None, "is null (leave the field out instead)")
    check_location(entry["latitude"], entry["longitude"], entry.get("height"), entry.get("place"))
    since = entry["since"]
    try:
        parse_time(since)
    except (ValueError, TypeError):
        raise LocationError("since", since, "is not a UTC time like 2026-11-29T06:00:00Z") from None
    return Location(entry["latitude"], entry["longitude"], entry.get("height"), entry.get("place"), since)


@dataclass
class Device:
    device_id: str
    board: str
    sensors: list[str]
    keys: list[DeviceKey] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)  # its positions, oldest first

    @property
    def location(self) -> Location | None:
        """Where the device stands now (the newest of its locations); None if it was never given one."""
        return self.locations[-1] if self.locations else None

    @property
    def active_key(self) -> DeviceKey:
        return next(k for k in self.keys if k.status == "active")

    def ordered_keys(self) -> list[DeviceKey]:
        """The order a verifier tries them in: the active key, the retired ones newest first, the revoked ones."""
        rank = {"active": 0, "retired": 1, "revoked": 2}
        return sorted(reversed(self.keys), key=lambda k: rank[k.status])

    def to_json(self) -> dict:
        d = {"board": self.board, "sensors": self.sensors, "keys": [k.to_json() for k in self.keys]}
        if self.locations:  # a device without one is written as before
            d["locations"] = [loc.to_json() for loc in self.locations]
        return d


def check_device_id(device_id: str) -> None:
    if not DEVICE_ID.match(device_id or ""):
        raise RegistryError(
            f"device id {device_id!r} is not valid: use letters, digits, '.', '_' and '-', "
            "at most 64 characters, starting with a letter or digit"
        )


def _load_locations(path: Path, device_id: str, entries) -> list[Location]:
    if not isinstance(entries, list):
        raise RegistryError(f"registry {path}: device {device_id!r}: locations {_shown(entries)} is not a list")
    locations = []
    for number, entry in enumerate(entries, 1):
        try:
            location = _location_from_json(entry)
        except LocationError as exc:
            raise RegistryError(f"registry {path}: device {device_id!r}, location {number}: {exc}") from None
        if locations and parse_time(location.since) < parse_time(locations[-1].since):
            raise RegistryError(f"registry {path}: device {device_id!r}, location {number}: since "
                                f"{location.since!r} is before the location above it ({locations[-1].since}); "
                                "the history is kept oldest first")
        locations.append(location)
    return locations


class Registry:
    def __init__(self, devices: dict[str, Device] | None = None, path: Path | None = None):
        self.devices = devices or {}
        self.path = path
        self._keys: dict[str, list[ec.EllipticCurvePublicKey]] = {}
        self._rules: dict[str, list[KeyRule]] = {}

    # -- loading and saving -------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> "Registry":
        path = Path(path)
        if not path.exists():
            if missing_ok:
                return cls(path=path)
            raise RegistryError(f"registry {path} does not exist (govedge provision creates it)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))  # JSON is UTF-8 (RFC 8259), whatever the locale
        except OSError as exc:
            raise RegistryError(f"registry {path} cannot be read: {exc.strerror or exc}") from None
        except ValueError as exc:  # not JSON, or not text at all
            raise RegistryError(f"registry {path} is not valid JSON: {exc} (fix the file, or give the right "
                                "one)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise RegistryError(f"registry {path} is not a {FORMAT} file")
        devices = {}
        for device_id, entry in (doc.get("devices") or {}).items():
            try:
                check_device_id(device_id)
                keys = [DeviceKey(k["public_key"], k["status"], k["created"], k.get("retired"),
                                  k.get("valid_below_seq"), k.get("revoked"), k.get("revoked_since"))
                        for k in entry["keys"]]
                device = Device(device_id, entry["board"], list(entry.get("sensors", [])), keys)
            except (KeyError, TypeError) as exc:
                raise RegistryError(f"registry {path}: device {device_id!r} is malformed ({exc})") from None
            device.locations = _load_locations(path, device_id, entry.get("locations", []))
            for k in keys:
                if k.status not in STATUSES:
                    raise RegistryError(f"registry {path}: device {device_id!r} has a key with status {k.status!r}")
                try:
                    k.rule()
                except (ValueError, TypeError) as exc:
                    raise RegistryError(f"registry {path}: device {device_id!r} has a key with a bad time "
                                        f"({exc})") from None
                if k.valid_below_seq is not None and type(k.valid_below_seq) is not int:
                    raise RegistryError(f"registry {path}: device {device_id!r}: valid_below_seq is not an integer")
                try:
                    public_key_from_sec1(bytes.fromhex(k.public_key))
                except (ValueError, WireError) as exc:
                    raise RegistryError(f"registry {path}: device {device_id!r} has a bad public key ({exc})") from None
            # none, between `govedge revoke` of its active key and `govedge provision --rotate`
            if sum(k.status == "active" for k in keys) > 1 or (
                    not any(k.status in ("active", "revoked") for k in keys)):
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
        """The device's keys in Device.ordered_keys's order (active first); empty for an unknown device."""
        if device_id not in self._keys:
            device = self.devices.get(device_id)
            if device is None:
                return []
            ordered = device.ordered_keys()
            self._rules[device_id] = [k.rule() for k in ordered]
            self._keys[device_id] = [public_key_from_sec1(bytes.fromhex(k.public_key)) for k in ordered]
        return self._keys[device_id]

    __call__ = public_keys  # a Registry is a key lookup for wire.verify

    def key_rule(self, device_id: str, key: int) -> KeyRule:
        """What the device's key ``key`` (a Reading's ``key``: its place in public_keys) may sign."""
        rules = self._rules.get(device_id)
        if rules is None:
            self.public_keys(device_id)
            rules = self._rules[device_id]
        return rules[key]

    def retired_ids(self, device_id: str) -> list[str]:
        """The ids of the device's keys that are not active (they get a boundary from its active key's first reading)."""
        device = self.devices.get(device_id)
        return [] if device is None else [k.key_id for k in device.keys if k.status != "active"]

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

    def revoke(self, device_id: str, since: str | None = None, key: str | None = None) -> DeviceKey:
        """Marks a key of the device revoked (a leak): nothing it signed from ``since`` (a registry time;
        default now) on is valid. ``key`` (its key id, ``govedge.core.registry.key_id``) names a retired key
        that leaked after its rotation; without it the active key is revoked, and the device signs nothing
        valid until `govedge provision --rotate`."""
        device = self.devices.get(device_id)
        if device is None:
            raise RegistryError(f"device {device_id!r} is not in the registry; nothing to revoke")
        if key is None:
            found = next((k for k in device.keys if k.status == "active"), None)
            if found is None:
                raise RegistryError(f"device {device_id!r} has no active key (revoked already); "
                                    "give it a new one with `govedge provision --rotate`")
        else:
            found = next((k for k in device.keys if k.key_id == key), None)
            if found is None:
                known = ", ".join(f"{k.key_id} ({k.status})" for k in device.keys)
                raise RegistryError(f"device {device_id!r} has no key {key!r}; its keys: {known}")
            if found.status == "revoked":
                raise RegistryError(f"key {key} of {device_id!r} is revoked already (from {found.revoked_since})")
        key = found
        now = _now()
        if since is not None:
            try:
                parse_time(since)
            except ValueError:
                raise RegistryError(f"--since {since!r} is not a UTC time like 2026-11-29T06:00:00Z") from None
        key.status, key.revoked, key.revoked_since = "revoked", now, since or now
        self._keys.pop(device_id, None)
        return key

    def locate(self, device_id: str, latitude: float, longitude: float, height: float | None = None,
               place: str | None = None, since: str | None = None) -> tuple[Location, bool]:
        """Records that the device stands here from ``since`` (a registry time; default now) on; its earlier
        locations stay in its history. Returns (its current location, whether a new one was recorded): the
        position and place it already has are not recorded twice. Checked by check_location; the keys are not
        touched."""
        device = self.devices.get(device_id)
        if device is None:
            raise RegistryError(f"device {device_id!r} is not in the registry; provision it first "
                                "(`govedge provision`)")
        try:
            check_location(latitude, longitude, height, place)
        except LocationError as exc:
            raise RegistryError(f"device {device_id!r}: {exc}") from None
        if since is not None:
            try:
                parse_time(since)
            except (ValueError, TypeError):
                raise RegistryError(f"device {device_id!r}: since {_shown(since)} is not a UTC time like "
                                    "2026-11-29T06:00:00Z") from None
        location = Location(latitude, longitude, height, place, since or _now())
        last = device.location
        if last is not None and last.same_position(location):
            return last, False
        if last is not None and parse_time(location.since) < parse_time(last.since):
            raise RegistryError(f"device {device_id!r}: the new location's time {location.since} is before its "
                                f"current location's ({last.since}); the history goes forward (is this "
                                "machine's clock right?)")
        device.locations.append(location)
        return location, True
