"""gateway.toml: read, defaults filled in, checked; a wrong file names the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge import anchor as anchoring
from govedge.core.config import ConfigError, MqttEndpoint, endpoint, read_toml, workers


@dataclass
class GatewayConfig:
    gateway_id: str
    key_file: Path
    data_dir: Path
    registry: Path
    ingest: MqttEndpoint = field(default_factory=MqttEndpoint)
    serial_ports: list[str] = field(default_factory=list)
    serial_baud: int = 115200
    hub: MqttEndpoint = field(default_factory=MqttEndpoint)
    hub_topic: str = ""
    max_future_s: int = 300
    clock_synchronized: str = "auto"  # whether the gateway's clock is synchronized: "auto" (ask), "yes", "no"
    verify_workers: int = 1  # processes checking signatures; 0: in the main process
    device_burst: int = 4096  # messages a sender may send at once (govedge.gateway.admit)
    device_rate_per_s: float = 10.0  # and how fast its share refills
    batch_interval_s: float = 10.0
    batch_max_readings: int = 500
    batch_mode: str = "raw"
    uplink_rate_per_s: float = 20.0
    # a batch or epoch record the hub has not confirmed committed this long after it went out is sent again
    hub_confirm_timeout_s: float = 30.0
    heartbeat_s: float = 60.0  # the gateway's signed status record to the hub this often; 0: none
    store_max_bytes: int = 2_000_000_000
    store_max_age_days: int = 90
    store_held_back_days: int = 30  # how long values held back by the filters are kept for audit
    store_policy: str = "drop_oldest"  # when full: "drop_oldest" unsent data (counted) or "refuse_new"
    quarantine_max_bytes: int = 64_000_000  # the quarantine's own budget, apart from the store's quota
    quarantine_max_rows: int = 100_000
    store_min_free_bytes: int = 64_000_000  # below this much free disk the gateway stops acknowledging
    synchronous: str = "FULL"  # fsync per commit: what a node is told is committed survives a power cut
    metrics_port: int = 0  # 0: no Prometheus endpoint
    filter: dict = field(default_factory=dict)
    aggregate: dict = field(default_factory=dict)
    epoch_s: float = 600.0  # an epoch's batches are anchored as one root this long after its first batch
    anchor_backend: str = anchoring.NONE  # a registered backend ("rest", "evm"), or "none": built, not anchored
    anchor: dict = field(default_factory=dict)  # the backend's own settings: [anchor.rest] or [anchor.evm]
    _key: ec.EllipticCurvePrivateKey | None = field(default=None, init=False, repr=False, compare=False)

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The gateway's P-256 key (key_file, PEM), read once; it signs batches, epoch records and,
        with the REST backend, anchor requests."""
        if self._key is None:
            try:
                key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            except ValueError as exc:
                raise ConfigError(f"[gateway] key_file {self.key_file}: not a PEM private key ({exc})") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(f"[gateway] key_file {self.key_file}: not a P-256 key")
            self._key = key
        return self._key


def load(path: str | Path) -> GatewayConfig:
    path = Path(path)
    return parse(read_toml(path), base=path.parent)


def parse(doc: dict, base: Path = Path(".")) -> GatewayConfig:
    gw = doc.get("gateway") or {}
    for key in ("id", "key_file", "data_dir", "registry"):
        if key not in gw:
            raise ConfigError(f"[gateway] {key} is missing")
    from govedge.core import topics
    from govedge.core.wire import DEVICE_ID

    if not DEVICE_ID.match(gw["id"]):
        raise ConfigError(f"[gateway] id {gw['id']!r} is not valid: letters, digits, '.', '_', '-'")
    ingest = doc.get("ingest") or {}
    hub = doc.get("hub") or {}
    batch = doc.get("batch") or {}
    store = doc.get("store") or {}
    cfg = GatewayConfig(
        gateway_id=gw["id"],
        key_file=base / gw["key_file"],
        data_dir=base / gw["data_dir"],
        registry=base / gw["registry"],
        ingest=endpoint(ingest.get("mqtt") or {}, "[ingest.mqtt]", 1883),
        serial_ports=list((ingest.get("serial") or {}).get("ports", [])),
        serial_baud=int((ingest.get("serial") or {}).get("baud", 115200)),
        hub=endpoint({k: v for k, v in hub.items() if k not in ("topic", "rate_per_s", "confirm_timeout_s",
                                                                "heartbeat_s")}, "[hub]",
                     8883),
        hub_topic=hub.get("topic", topics.batch(gw["id"])),
        uplink_rate_per_s=float(hub.get("rate_per_s", 20.0)),
        hub_confirm_timeout_s=float(hub.get("confirm_timeout_s", 30.0)),
        heartbeat_s=float(hub.get("heartbeat_s", 60.0)),
        max_future_s=int((doc.get("verify") or {}).get("max_future_s", 300)),
        clock_synchronized=(doc.get("verify") or {}).get("clock_synchronized", "auto"),
        verify_workers=workers((doc.get("verify") or {}).get("workers", "auto")),
        device_burst=int((doc.get("verify") or {}).get("device_burst", 4096)),
        device_rate_per_s=float((doc.get("verify") or {}).get("device_rate_per_s", 10.0)),
        batch_interval_s=float(batch.get("interval_s", 10.0)),
        batch_max_readings=int(batch.get("max_readings", 500)),
        batch_mode=batch.get("mode", "raw"),
        store_max_bytes=int(store.get("max_bytes", 2_000_000_000)),
        store_max_age_days=int(store.get("max_age_days", 90)),
        store_policy=store.get("policy", "drop_oldest"),
        store_held_back_days=int(store.get("held_back_days", 30)),
        quarantine_max_bytes=int(store.get("quarantine_max_bytes", 64_000_000)),
        quarantine_max_rows=int(store.get("quarantine_max_rows", 100_000)),
        store_min_free_bytes=int(float(store.get("min_free_mb", 64)) * 1_000_000),
        synchronous=store.get("synchronous", "FULL"),
        metrics_port=int((doc.get("metrics") or {}).get("port", 0)),
        filter=doc.get("filter") or {},
        aggregate=doc.get("aggregate") or {},
        epoch_s=float((doc.get("anchor") or {}).get("epoch_s", 600)),
        anchor_backend=(doc.get("anchor") or {}).get("backend", anchoring.NONE),
    )
    anchor = doc.get("anchor") or {}
    backends = anchoring.backend_names()
    extra = set(anchor) - {"epoch_s", "backend", *backends}
    if extra:
        raise ConfigError(f"[anchor]: unknown keys {sorted(extra)} (known: backend, epoch_s, "
                          + ", ".join(f"[anchor.{name}]" for name in backends) + ")")
    if cfg.anchor_backend != anchoring.NONE:
        anchoring.lookup(cfg.anchor_backend)  # names the known backends if there is none of that name
    if cfg.epoch_s <= 0:
        raise ConfigError("[anchor] epoch_s must be positive")
    if cfg.anchor_backend != anchoring.NONE:
        cfg.anchor = anchoring.settings_of(cfg.anchor_backend, anchor.get(cfg.anchor_backend) or {}, base)
    if not cfg.ingest.client_id:
        cfg.ingest.client_id = f"govedge-gateway-{cfg.gateway_id}"
    if not cfg.hub.client_id:
        cfg.hub.client_id = f"govedge-uplink-{cfg.gateway_id}"
    if cfg.batch_mode not in ("raw", "aggregate"):
        raise ConfigError(f"[batch] mode must be 'raw' or 'aggregate', not {cfg.batch_mode!r}")
    if cfg.store_policy not in ("drop_oldest", "refuse_new"):
        raise ConfigError(f"[store] policy must be 'drop_oldest' or 'refuse_new', not {cfg.store_policy!r}")
    if cfg.synchronous not in ("NORMAL", "FULL"):
        raise ConfigError(f"[store] synchronous must be 'NORMAL' or 'FULL', not {cfg.synchronous!r}")
    if cfg.clock_synchronized not in ("auto", "yes", "no"):
        raise ConfigError("[verify] clock_synchronized must be 'auto' (ask the kernel and systemd-timesyncd), "
                          f"'yes' or 'no', not {cfg.clock_synchronized!r}")
    if not cfg.hub_confirm_timeout_s > 0:
        raise ConfigError(f"[hub] confirm_timeout_s must be a positive number of seconds, not "
                          f"{cfg.hub_confirm_timeout_s:g}")
    if cfg.device_burst < 1 or cfg.device_rate_per_s <= 0:
        raise ConfigError("[verify] device_burst and device_rate_per_s must be positive")
    if cfg.quarantine_max_bytes < 1 or cfg.quarantine_max_rows < 1:
        raise ConfigError("[store] quarantine_max_bytes and quarantine_max_rows must be positive")
    if cfg.store_min_free_bytes < 0:
        raise ConfigError("[store] min_free_mb must not be negative (0: no reserve, SQLite fills the disk)")
    if cfg.batch_max_readings < 1 or cfg.batch_interval_s <= 0:
        raise ConfigError("[batch] max_readings and interval_s must be positive")
    return cfg
