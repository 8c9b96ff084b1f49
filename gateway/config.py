"""gateway.toml: read, defaults filled in, checked; a wrong file names the key.

SCHEMA below is the file: every section and key with its type, range, default and meaning. It drives
the parsing (govedge.core.config.parse), the table in docs/CONFIG.md and the example gateway.toml
(both written by ``python -m govedge.tools.dev.configdoc``). The anchor backends' sections come from
the settings each backend registers (govedge.anchor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge import anchor as anchoring
from govedge.core import config as schema
from govedge.core.cose import DEVICE_ID, MAX_DEVICE_ID_CHARS
from govedge.core.config import MAX_WORKERS, ConfigError, Key, MqttEndpoint, Section, read_toml, workers


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
    heartbeat_s: float = 60.0  # a signed status record to the hub this often; 0: none
    store_max_bytes: int = 2_000_000_000
    store_max_age_days: int = 90
    store_held_back_days: int = 30  # how long values held back by the filters are kept for audit
    store_policy: str = "drop_oldest"  # when full: "drop_oldest" unsent data (counted) or "refuse_new"
    quarantine_max_bytes: int = 64_000_000  # the quarantine's own budget, apart from the store's quota
    quarantine_max_rows: int = 100_000
    store_min_free_bytes: int = 64_000_000  # below this much free disk the gateway stops acknowledging
    synchronous: str = "FULL"  # fsync per commit: what a node is told is committed survives a power cut
    metrics_port: int = 0  # 0: no Prometheus endpoint
    web_host: str = "0.0.0.0"  # the status page (govedge gateway web): the address it listens on
    web_port: int = 8080
    web_refresh_s: float = 5.0
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


CLOCK_SYNCHRONIZED = ("auto", "yes", "no")

_GATEWAY = Section("gateway", (
    Key("id", str, help="the gateway's id: the kid of its batches, unique per city", required=True,
        pattern=DEVICE_ID, pattern_text=f"letters, digits, '.', '_', '-' (at most {MAX_DEVICE_ID_CHARS}, a letter or "
        "digit first)", example="gw-muenster-01"),
    Key("key_file", str, help="its P-256 private key (PEM, owner-only)", required=True, path=True,
        example="gateway.key"),
    Key("data_dir", str, help="the folder of gateway.db (SQLite, WAL) and the service's state", required=True,
        path=True, example="/var/lib/govedge"),
    Key("registry", str, help="devices and their public keys (govedge provision writes it)", required=True,
        path=True, example="/etc/govedge/registry.json"),
))

_INGEST_MQTT = Section("ingest.mqtt", schema.mqtt_keys(1883, examples={
    "client_id": "govedge-gateway-gw-muenster-01", "client_id_shown": "`govedge-gateway-<id>`",
    "user": "gateway", "password": "...", "ca": "/etc/govedge/tls/ca.pem"}),
    help="The local broker the nodes publish to.")

_INGEST_SERIAL = Section("ingest.serial", (
    Key("ports", list, [], 'serial ports nodes are wired to (docs/FORMAT.md, "Serial framing"), e.g. '
                           '["/dev/ttyUSB0"]'),
    Key("baud", int, 115200, "their speed in bit/s", min=300, max=4_000_000),
), help="Nodes wired to the gateway.")

_VERIFY = Section("verify", (
    Key("max_future_s", int, 300, "a reading more than this many seconds ahead of the gateway's clock is "
        "quarantined (future_time) while that clock is synchronized, else stored, forwarded and flagged "
        "clock_unsynced (gateway/README.md, \"The gateway's clock\")", min=0),
    Key("clock_synchronized", str, "auto", "is the gateway's clock right? \"auto\": the kernel's NTP state "
        "(adjtimex, as timedatectl shows it), else systemd-timesyncd's flag file; \"yes\" / \"no\": a box whose "
        "clock is set otherwise", choices=CLOCK_SYNCHRONIZED),
    Key("workers", int, "auto", "processes checking signatures: \"auto\" one per core, at most 4; 0: none, "
        "the service checks them itself", min=0, max=MAX_WORKERS, words=("auto",)),
    Key("device_burst", int, 4096, "each sender's fair share (the device of the topic, or the serial port): "
        "this many messages at once; beyond it a message is quarantined as over_share unverified", min=1),
    Key("device_rate_per_s", float, 10.0, "and how fast the share refills, in messages per second (a node "
        "replaying a full flash buffer, 256 messages by default, stays far below it)", above=0),
))

_FILTER = Section("filter", help="Ranges, spikes, deadband and rate per quantity: gateway/README.md, "
                  "\"filter\", names every key; checked by govedge.gateway.filter.", free=True,
                  example="# [filter.quantities.temp]\n# min = -40\n# max = 85\n")

_AGGREGATE = Section("aggregate", help="Windows per device and quantity: gateway/README.md, \"aggregate\"; "
                     "checked by govedge.gateway.aggregate.", free=True, example="window_s = 60\nlateness_s = 30\n")

_BATCH = Section("batch", (
    Key("interval_s", float, 10.0, "a batch at least this often (seconds) while readings wait", above=0),
    Key("max_readings", int, 500, "or as soon as this many wait", min=1),
    Key("mode", str, "raw", "\"raw\": the device messages go in the batch; \"aggregate\": their hashes, with "
        "the aggregates", choices=("raw", "aggregate")),
))

_STORE = Section("store", (
    Key("synchronous", str, "FULL", "\"FULL\": fsync every commit (group commit), so what the nodes are told "
        "is committed survives a power cut; \"NORMAL\": only a crash of the process", choices=("FULL", "NORMAL")),
    Key("max_bytes", int, 2_000_000_000, "quota of gateway.db with its WAL, in bytes; delivered data is "
        "pruned first", min=1),
    Key("max_age_days", int, 90, "delivered data older than this is pruned; unsent data too under policy "
        "\"drop_oldest\" (counted)", min=1),
    Key("held_back_days", int, 30, "values held back by the filters are kept this long for audit", min=0),
    Key("policy", str, "drop_oldest", "when unsent data alone fills the quota: \"drop_oldest\" (counted, in "
        "the drops table and the metrics) or \"refuse_new\" (stop acknowledging: the broker and the nodes' "
        "buffers hold the messages)", choices=("drop_oldest", "refuse_new")),
    Key("quarantine_max_bytes", int, 64_000_000, "the quarantine's own budget, not counted in max_bytes: "
        "refused messages (their first 2048 bytes, SHA-256, size) never crowd out readings", min=1),
    Key("quarantine_max_rows", int, 100_000, "and its rows; over either, the sender with the most loses its "
        "oldest rows first (counted)", min=1),
    Key("min_free_mb", float, 64.0, "free disk kept in reserve, in MB: below it nothing is acknowledged "
        "(messages wait in the broker and on the nodes), room is made, and it goes on by itself; 0: none",
        min=0),
))

_HUB = Section("hub", (
    *schema.mqtt_keys(8883, examples={
        "host": "hub.example.nrw", "tls": True, "ca": "/etc/govedge/hub-ca.pem",
        "cert": "/etc/govedge/gateway-cert.pem", "key": "/etc/govedge/gateway-cert.key",
        "client_id": "govedge-uplink-gw-muenster-01", "client_id_shown": "`govedge-uplink-<id>`",
        "user": "gw-muenster-01", "password": "..."}),
    Key("topic", str, None, "where the batches go", shown="`govedge/v1/gateway/<id>/batch`",
        example="govedge/v1/gateway/gw-muenster-01/batch"),
    Key("rate_per_s", float, 20.0, "after an outage the backlog goes out at most this many batches per "
        "second; 0: no limit", min=0),
    Key("confirm_timeout_s", float, 30.0, "a batch or epoch record the hub has not confirmed committed this "
        "many seconds after it went out is sent again", above=0),
    Key("heartbeat_s", float, 60.0, "the gateway sends a signed status record to the hub this often "
        "(seconds); 0: no heartbeat", min=0),
), help="The IoT-Hub's broker, where the batches go.")

_METRICS = Section("metrics", (
    Key("port", int, 0, "Prometheus endpoint on 127.0.0.1; 0 turns it off", min=0, max=65535, example=9108),
))


_WEB = Section("web", (
    Key("host", str, "0.0.0.0", "the address `govedge gateway web` (the read-only status page) listens on: "
        "0.0.0.0 every interface (a technician's phone or laptop at the cabinet), 127.0.0.1 this machine only"),
    Key("port", int, 8080, "its TCP port", min=1, max=65535),
    Key("refresh_s", float, 5.0, "seconds between the page's updates", above=0),
), help="The status page: what `govedge gateway status` says, refreshing itself; it shows no secret.")


def _anchor_sections() -> tuple[Section, ...]:
    """[anchor] and one section per registered backend, from the settings it registers."""
    return anchoring.sections(Section("anchor", (
        anchoring.backend_key("epochs", "epochs are built, not anchored"),
        Key("epoch_s", float, 600.0, "an epoch is anchored this many seconds after its first batch (and when "
            "the service stops)", above=0),
    ), help="docs/PROOF.md: epochs; docs/ANCHORING.md: the chains."))


def schema_sections() -> tuple[Section, ...]:
    """gateway.toml's sections, in the order of the example file."""
    return (_GATEWAY, _INGEST_MQTT, _INGEST_SERIAL, _VERIFY, _FILTER, _AGGREGATE, _BATCH, _STORE, _HUB,
            _METRICS, _WEB, *_anchor_sections())


EXAMPLE_HEADER = """gateway.toml: the configuration of `govedge gateway run` (example, every key shown).
Written from the schema in govedge.gateway.config (python -m govedge.tools.dev.configdoc); docs/CONFIG.md
has the same keys as tables. Paths are relative to this file's folder unless absolute."""


def load(path: str | Path) -> GatewayConfig:
    path = Path(path)
    return parse(read_toml(path), base=path.parent, file=path)


def parse(doc: dict, base: Path = Path("."), file: Path | str | None = None) -> GatewayConfig:
    """``doc`` checked against the schema; ``base``: the folder relative paths are taken from (the file's);
    ``file``: the file the errors name."""
    try:
        return _parse(doc, base)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}" if file is not None else str(exc)) from None


def _parse(doc: dict, base: Path) -> GatewayConfig:
    from govedge.core import topics

    sections = schema_sections()
    v = schema.parse(doc, sections, base)
    gw, hub, verify, batch, store, anchor = (v[n] for n in ("gateway", "hub", "verify", "batch", "store", "anchor"))
    backend = anchor["backend"]
    settings = anchoring.chosen_settings(backend, sections, v)
    ingest, uplink = schema.endpoint_of(v["ingest.mqtt"]), schema.endpoint_of(hub)
    ingest.client_id = ingest.client_id or f"govedge-gateway-{gw['id']}"
    uplink.client_id = uplink.client_id or f"govedge-uplink-{gw['id']}"
    return GatewayConfig(
        gateway_id=gw["id"],
        key_file=gw["key_file"],
        data_dir=gw["data_dir"],
        registry=gw["registry"],
        ingest=ingest,
        serial_ports=v["ingest.serial"]["ports"],
        serial_baud=v["ingest.serial"]["baud"],
        hub=uplink,
        hub_topic=hub["topic"] or topics.batch(gw["id"]),
        uplink_rate_per_s=hub["rate_per_s"],
        hub_confirm_timeout_s=hub["confirm_timeout_s"],
        heartbeat_s=hub["heartbeat_s"],
        max_future_s=verify["max_future_s"],
        clock_synchronized=verify["clock_synchronized"],
        verify_workers=workers(verify["workers"]),
        device_burst=verify["device_burst"],
        device_rate_per_s=verify["device_rate_per_s"],
        batch_interval_s=batch["interval_s"],
        batch_max_readings=batch["max_readings"],
        batch_mode=batch["mode"],
        store_max_bytes=store["max_bytes"],
        store_max_age_days=store["max_age_days"],
        store_policy=store["policy"],
        store_held_back_days=store["held_back_days"],
        quarantine_max_bytes=store["quarantine_max_bytes"],
        quarantine_max_rows=store["quarantine_max_rows"],
        store_min_free_bytes=int(store["min_free_mb"] * 1_000_000),
        synchronous=store["synchronous"],
        metrics_port=v["metrics"]["port"],
        web_host=v["web"]["host"],
        web_port=v["web"]["port"],
        web_refresh_s=v["web"]["refresh_s"],
        filter=v["filter"],
        aggregate=v["aggregate"],
        epoch_s=anchor["epoch_s"],
        anchor_backend=backend,
        anchor=settings,
    )
