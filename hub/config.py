"""hub.toml: read, defaults filled in, checked; a wrong file names the key (hub/hub.toml is the example).

SCHEMA below is the file: every section and key with its type, range, default and meaning. It drives
the parsing (govedge.core.config.parse), the table in docs/CONFIG.md and the example hub.toml (both
written by ``python -m govedge.tools.dev.configdoc``)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from govedge import anchor as anchoring
from govedge.core import config as schema
from govedge.core.config import MAX_WORKERS, ConfigError, Key, MqttEndpoint, Section, read_toml, workers  # noqa: F401
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
    keep_months: int = 0  # retention of readings in whole months (govedge.hub.partitions); 0: everything
    metrics_port: int = 0  # the Prometheus endpoint on 127.0.0.1; 0: none
    web_host: str = "127.0.0.1"  # the status page (govedge hub web): the address it listens on
    web_port: int = 8090
    web_refresh_s: float = 5.0
    key: Path | None = None  # the hub's P-256 key (PEM): it signs reports (govedge hub report, keygen)
    anchor_backend: str = anchoring.NONE  # where reports are anchored: a registered backend, or "none"
    anchor: dict = field(default_factory=dict)  # the backend's own settings: [anchor.rest] or [anchor.evm]
    _key: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def hub_id(self) -> str:
        """The hub's name towards a chain (the REST backend's creator): "hub-" and its key id."""
        from govedge.core.report import hub_key_id

        return "hub-" + hub_key_id(self.signing_key().public_key())

    def signing_key(self):
        """The hub's P-256 key ([hub] key, PEM), read once; it signs reports and, with the REST backend,
        their anchor requests."""
        if self._key is None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec

            try:
                data = self.key.read_bytes()
            except FileNotFoundError:
                raise ConfigError(f"[hub] key {self.key}: no such file (make it with govedge hub keygen --config "
                                  "hub.toml)") from None
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"[hub] key {self.key}: not a PEM private key ({exc})") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(f"[hub] key {self.key}: not a P-256 key")
            self._key = key
        return self._key


SCHEMA: tuple[Section, ...] = (
    Section("hub", (
        Key("registry", str, help="the device registry that `govedge provision` writes", required=True, path=True,
            example="registry.json"),
        Key("gateways", str, help="the gateways and their keys: `govedge hub add-gateway`", required=True,
            path=True, example="gateways.json"),
        Key("share_group", str, "govedge-hub", "workers in one group split the batches (MQTT 5 shared "
            "subscription); \"\": one worker alone, MQTT 3.1.1, for a broker without MQTT 5",
            pattern=re.compile(r"[^/+#]*"), pattern_text="a name without '/', '+' or '#'"),
        Key("session_expiry_s", int, 86400, "the broker keeps a worker's batches this many seconds while it is "
            "away", min=0),
        Key("verify_workers", int, "auto", "processes checking device signatures: \"auto\" one per core, at "
            "most 4; 0: none, the worker checks them itself", min=0, max=MAX_WORKERS, words=("auto",)),
        Key("state_dir", str, ".", "the crash guard's journal (handling-<client_id>); under systemd the "
            "unit's StateDirectory, the one place it may write", path=True, shown="the folder of this file",
            example="/var/lib/govedge"),
        Key("rejected_max_bytes", int, 256_000_000, "the rejected table's own budget in kept payload bytes; over "
            "it the oldest rows go first, each gateway keeping its fair share, never real readings",
            min=MAX_MESSAGE_BYTES),
        Key("rejected_max_rows", int, 100_000, "and its rows", min=1),
        Key("rejected_keep_bytes", int, KEEP_BYTES, "of each refused payload, with SHA-256 and size of all of "
            "it; enough for a batch of 500 readings (about 100 kB); a device message is always kept whole",
            min=MAX_MESSAGE_BYTES),
        Key("key", str, "hub-key.pem", "the hub's P-256 private key (PEM, owner only) that signs its reports "
            "(`govedge hub report`); `govedge hub keygen` makes it and its public key beside it (.pub.pem) for "
            "verifiers (docs/REPORT.md)", path=True, example="/etc/govedge/hub/hub-key.pem"),
    )),
    Section("store", (
        Key("url", str, "hub.db", "a SQLite file (relative to this file's folder), or "
            "\"postgresql://govedge@db.example/govedge\" (the password from ~/.pgpass or PGPASSWORD, never in "
            "this file)"),
        Key("synchronous", str, "FULL", "SQLite only: \"FULL\" fsyncs every commit, so a batch the hub confirmed "
            "to its gateway survives a power cut; \"NORMAL\": only a crash of the process (PostgreSQL: its own "
            "synchronous_commit, keep it on)", choices=SYNCHRONOUS),
        Key("keep_months", int, 0, "readings and their measurements filed more than this many whole months "
            "before the current month are deleted, hourly (PostgreSQL: their monthly partitions dropped); 0 keeps "
            "everything. Batches and epochs, the gateways' signed evidence, are kept", min=0, max=1200,
            example=36),
    )),
    Section("mqtt", schema.mqtt_keys(8883, examples={
        "client_id": "", "client_id_shown": "`govedge-hub-<host name>`", "tls": True,
        "ca": "/etc/govedge/hub-ca.pem", "cert": "/etc/govedge/hub-worker.pem", "key": "/etc/govedge/hub-worker.key",
        "user": "hub", "password": "..."}), help="The hub's broker, where gateways publish their batches. The "
        "client id must be stable across restarts and differ between workers."),
    Section("metrics", (
        Key("port", int, 0, "Prometheus endpoint on 127.0.0.1; 0 turns it off", min=0, max=65535),
    )),
    Section("web", (
        Key("host", str, "127.0.0.1", "the address `govedge hub web` (the read-only status page) listens on: "
            "127.0.0.1 this machine only (behind the operator's reverse proxy), 0.0.0.0 every interface"),
        Key("port", int, 8090, "its TCP port", min=1, max=65535),
        Key("refresh_s", float, 5.0, "seconds between the page's updates", above=0),
    ), help="The status page: what `govedge hub status` says, refreshing itself."),
    *anchoring.sections(Section("anchor", (
        anchoring.backend_key("reports", "reports are signed, not anchored"),
    ), help="docs/REPORT.md: anchoring a report; docs/ANCHORING.md: the chains. The same backends and keys as "
            "the gateway's; the hub anchors with its own account (EVM) or its own key (REST).")),
)

EXAMPLE_HEADER = """hub.toml: the configuration of `govedge hub run --config hub.toml` (example, every key shown).
Written from the schema in govedge.hub.config (python -m govedge.tools.dev.configdoc); docs/CONFIG.md
has the same keys as tables. Paths are relative to this file's folder unless absolute."""


def load(path: str | Path) -> HubConfig:
    path = Path(path)
    return parse(read_toml(path), base=path.parent, file=path)


def parse(doc: dict, base: Path = Path("."), file: Path | str | None = None) -> HubConfig:
    """``doc`` checked against SCHEMA; ``base``: the folder relative paths are taken from (the file's);
    ``file``: the file the errors name."""
    v = schema.parse(doc, SCHEMA, base, file)
    hub, store = v["hub"], v["store"]
    url = store["url"]
    if not url.startswith(("postgresql://", "postgres://")):
        url = "sqlite://" + str(base / url.removeprefix("sqlite://"))
    mqtt = schema.endpoint_of(v["mqtt"])
    if not mqtt.client_id:
        # a worker's client id must be stable across its restarts (its session) and differ from its peers'
        mqtt.client_id = f"govedge-hub-{socket.gethostname()}"
    return HubConfig(
        registry=hub["registry"],
        gateways=hub["gateways"],
        store=url,
        mqtt=mqtt,
        share_group=hub["share_group"],
        session_expiry_s=hub["session_expiry_s"],
        verify_workers=workers(hub["verify_workers"]),
        state_dir=hub["state_dir"],
        rejected_max_bytes=hub["rejected_max_bytes"],
        rejected_max_rows=hub["rejected_max_rows"],
        rejected_keep_bytes=hub["rejected_keep_bytes"],
        synchronous=store["synchronous"],
        keep_months=store["keep_months"],
        metrics_port=v["metrics"]["port"],
        web_host=v["web"]["host"],
        web_port=v["web"]["port"],
        web_refresh_s=v["web"]["refresh_s"],
        key=hub["key"],
        anchor_backend=v["anchor"]["backend"],
        anchor=anchoring.chosen_settings(v["anchor"]["backend"], SCHEMA, v),
    )
