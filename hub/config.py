"""hub.toml: read, defaults filled in, checked; a wrong file names the key (hub/hub.toml is the example)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from govedge.core.config import ConfigError, MqttEndpoint, endpoint, read_toml, workers
from govedge.core.wire import MAX_MESSAGE_BYTES

from .store import KEEP_BYTES, SYNCHRONOUS


@dataclass
class HubConfig:
    registry: Path  # the device registry (govedge provision)
    gateways: Path  # the gateways and their keys (govedge hub add-gateway)
    store: str  # "sqlite:///path/hub.db", a path, or "postgresql://user@host/db"
    mqtt: MqttEndpoint = field(default_factory=MqttEndpoint)
    share_group: str = "govedge-hub"  # hub workers in one group split the batches; "": one worker, MQTT 3.1.1
    session_expiry_s: int = 86400  # how long the broker keeps batches for a worker that is away
    verify_workers: int = 1
    # the crash guard's journal of each worker (govedge.core.crashguard); None: the SQLite store's folder,
    # or the working directory (hub.toml's own default is its folder)
    state_dir: Path | None = None
    # the rejected table's own budget, apart from the readings; over it the oldest go first
    rejected_max_bytes: int = 256_000_000
    rejected_max_rows: int = 100_000
    rejected_keep_bytes: int = KEEP_BYTES  # of each rejected payload; a device message is always kept whole
    # SQLite's PRAGMA synchronous: FULL survives a power cut of the hub after a commit it has confirmed to the
    # gateway (which then forgets the batch); NORMAL only a crash of the process
    synchronous: str = "FULL"
    metrics_port: int = 0  # the Prometheus endpoint on 127.0.0.1 (govedge.hub.metrics); 0: none


_KNOWN = {"hub": {"registry", "gateways", "share_group", "session_expiry_s", "verify_workers", "state_dir",
                  "rejected_max_bytes", "rejected_max_rows", "rejected_keep_bytes"},
          "store": {"url", "synchronous"}, "metrics": {"port"}, "mqtt": set(MqttEndpoint.__dataclass_fields__)}

# the smallest value of each size: a device message is always kept whole (govedge.core.wire)
_LEAST = {"rejected_max_bytes": MAX_MESSAGE_BYTES, "rejected_max_rows": 1, "rejected_keep_bytes": MAX_MESSAGE_BYTES}


def load(path: str | Path) -> HubConfig:
    path = Path(path)
    return parse(read_toml(path), base=path.parent)


def parse(doc: dict, base: Path = Path(".")) -> HubConfig:
    for section, keys in doc.items():
        if section not in _KNOWN:
            raise ConfigError(f"unknown section [{section}] (known: {sorted(_KNOWN)})")
        extra = set(keys) - _KNOWN[section]
        if extra:
            raise ConfigError(f"[{section}]: unknown keys {sorted(extra)} (known: {sorted(_KNOWN[section])})")
    hub = doc.get("hub") or {}
    for key in ("registry", "gateways"):
        if key not in hub:
            raise ConfigError(f"[hub] {key} is missing")
    for key, least in _LEAST.items():
        value = hub.get(key, HubConfig.__dataclass_fields__[key].default)
        if type(value) is not int or value < least:
            raise ConfigError(f"[hub] {key} must be a whole number of at least {least}, not {value!r}")
    state_dir = hub.get("state_dir", ".")
    if not isinstance(state_dir, str) or not state_dir:
        raise ConfigError(f"[hub] state_dir must be a folder, not {state_dir!r}")
    url = (doc.get("store") or {}).get("url", "hub.db")
    synchronous = (doc.get("store") or {}).get("synchronous", "FULL")
    if synchronous not in SYNCHRONOUS:
        raise ConfigError(f"[store] synchronous must be one of {list(SYNCHRONOUS)}, not {synchronous!r} (FULL: "
                          "a confirmed batch survives a power cut of the hub; NORMAL: only a crash of the process)")
    if not url.startswith(("postgresql://", "postgres://")):
        url = "sqlite://" + str(base / url.removeprefix("sqlite://"))
    cfg = HubConfig(
        registry=base / hub["registry"],
        gateways=base / hub["gateways"],
        store=url,
        mqtt=endpoint(doc.get("mqtt") or {}, "[mqtt]", 8883),
        share_group=hub.get("share_group", "govedge-hub"),
        session_expiry_s=int(hub.get("session_expiry_s", 86400)),
        verify_workers=workers(hub.get("verify_workers", "auto"), "[hub] verify_workers"),
        state_dir=base / state_dir,
        synchronous=synchronous,
        metrics_port=int((doc.get("metrics") or {}).get("port", 0)),
        **{key: hub[key] for key in _LEAST if key in hub},
    )
    if not cfg.mqtt.client_id:
        # a worker's client id must be stable across its restarts (its session) and differ from its peers'
        cfg.mqtt.client_id = f"govedge-hub-{socket.gethostname()}"
    if any(c in cfg.share_group for c in "/+#"):
        raise ConfigError(f"[hub] share_group {cfg.share_group!r} must be a name without '/', '+' or '#'")
    return cfg
