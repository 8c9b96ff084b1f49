"""What the gateway's and the hub's configurations share: reading TOML, an MQTT endpoint, a number of
worker processes, and the error that names the key that is wrong."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from .errors import GovedgeError


class ConfigError(GovedgeError, ValueError):
    """A configuration that cannot be used; the text names the file, the key and what is wrong."""

    code = "config"


@dataclass
class MqttEndpoint:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None  # PEM file of the CA the broker's certificate chains to
    cert: str | None = None  # client certificate (PEM), for brokers that ask for one
    key: str | None = None
    keepalive: int = 60


def endpoint(section: dict, where: str, default_port: int) -> MqttEndpoint:
    known = set(MqttEndpoint.__dataclass_fields__)
    extra = set(section) - known
    if extra:
        raise ConfigError(f"{where}: unknown keys {sorted(extra)} (known: {sorted(known)})")
    ep = MqttEndpoint(**{"port": default_port, **section})
    if not isinstance(ep.port, int) or not 0 < ep.port < 65536:
        raise ConfigError(f"{where}.port {ep.port!r} is not a TCP port")
    return ep


def workers(value, where: str = "[verify] workers") -> int:
    if value == "auto":
        from .verifypool import default_workers

        return default_workers()
    if type(value) is not int or not 0 <= value <= 64:
        raise ConfigError(f"{where} must be \"auto\" or a number of processes 0..64, not {value!r}")
    return value


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
