"""`govedge gateway install`: a Raspberry Pi made into a gateway, or a folder made into one.

What it puts in place (paths under ``root``, which is / on the Pi):

    etc/govedge/gateway.toml            the configuration (gateway/gateway.toml explains every key)
    etc/govedge/gateway.key             the gateway's P-256 key (owner only), its identity
    etc/govedge/gateway.pub.pem         its public half, for the hub operator (govedge hub add-gateway)
    etc/govedge/registry.json           the device registry (from --registry; kept if there)
    etc/govedge/tls/                    a CA of the gateway's own and the local broker's certificate
    etc/govedge/mosquitto/passwd        one credential per device (and one for the gateway)
    etc/govedge/mosquitto/acl           each device may publish only to its own topics
    etc/govedge/credentials.json        the passwords, owner only: they go into the devices' configs
    etc/mosquitto/conf.d/govedge.conf   the local broker: TLS only, no anonymous clients, no message
                                        larger than the gateway accepts
    etc/systemd/system/govedge-gateway.service, govedge-gateway-web.service (the status page)
    var/lib/govedge/                    the gateway's store

The broker refuses what the gateway's decoder would refuse for its size anyway, before it
takes up the broker's memory and disk or the gateway's time. A message of more than 2048
bytes (govedge.core.wire.MAX_MESSAGE_BYTES) is dropped, whatever its topic
(``message_size_limit 2048``; the sender still gets its PUBACK, under MQTT 5 with a failure
reason code; Mosquitto 2.0.11 may then close its connection, and a node connects again). Every packet is bounded by the largest a device needs, 2048 bytes on the
longest topic a device may publish to (``max_packet_size 2139``, max_publish_packet_bytes()):
a larger one, such as a 1 MB message, ends the sender's connection as soon as the broker has
read its length, before the rest is read in. Mosquitto 2.0 notes at its start that it recommends
max_packet_size over message_size_limit: both are there on purpose, the first alone would
let a few bytes more through on a device's shorter topics.

Running it again changes nothing that is there: keys, passwords, certificates and
data are kept; devices new in the registry get their credentials; gateway.toml is
written again from the flags, with what it had as the defaults.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.anchor import NONE as NO_ANCHORING
from govedge.core import topics, wire
from govedge.core.install import (InstallError, accounts, broker_tls, password_file, password_line,  # noqa: F401 - the
                                  require_debian_packages, systemd_running)  # CLI and tests name them here
from govedge.core.install import password_matches as _password_matches  # noqa: F401
from govedge.core.install import pem_key as _pem_key
from govedge.core.install import run as _run
from govedge.core.install import settle as _settle
from govedge.core.install import temp_of as _temp_of
from govedge.core.install import write as _write
from govedge.core.registry import Registry

GATEWAY_USER = "gateway"  # the gateway's own user on its broker
SERVICE_USER = "govedge"  # the system user the gateway service runs as (gateway/govedge-gateway.service)
UNIT_TEMPLATE = Path(__file__).with_name("govedge-gateway.service")
WEB_UNIT_TEMPLATE = Path(__file__).with_name("govedge-gateway-web.service")  # the status page


@dataclass
class Options:
    root: Path
    gateway_id: str
    hub_host: str
    hub_port: int = 8883
    hub_ca: str | None = None
    hub_cert: str | None = None
    hub_key: str | None = None
    # the file holding the gateway's password on the hub broker (login: the gateway id), from the hub
    # operator's `govedge hub install --gateway ID`; read here, never given on a command line
    hub_password_file: Path | None = None
    broker_port: int = 8883
    broker_names: list[str] = field(default_factory=list)  # host names and addresses the nodes use
    registry: Path | None = None
    devices: Path | None = None  # provisioning's folder: the devices' configs get their credentials
    anchor: str = NO_ANCHORING  # a registered backend's name (govedge.anchor.backend_names())
    anchor_settings: dict = field(default_factory=dict)  # its required settings
    service_user: str = SERVICE_USER  # created on the Pi; under another root, used only if it exists


class Layout:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc/govedge"
        self.tls = self.etc / "tls"
        self.mosq = self.etc / "mosquitto"
        self.toml = self.etc / "gateway.toml"
        self.key = self.etc / "gateway.key"
        self.pub = self.etc / "gateway.pub.pem"
        self.registry = self.etc / "registry.json"
        self.credentials = self.etc / "credentials.json"
        self.passwd = self.mosq / "passwd"
        self.acl = self.mosq / "acl"
        self.broker_conf = root / "etc/mosquitto/conf.d/govedge.conf"
        self.unit = root / "etc/systemd/system/govedge-gateway.service"
        self.web_unit = root / "etc/systemd/system/govedge-gateway-web.service"
        self.data = root / "var/lib/govedge"
        self.service: tuple[int, int] | None = None  # (uid, gid) of the service user, when files get it
        self.mosquitto_gid: int | None = None  # Mosquitto's group, on the Pi

    def owners(self) -> dict[str, tuple[int, int] | None]:
        """Who owns what (None: whoever runs the install): the service its key and data, root the rest;
        the service's group reads gateway.toml, Mosquitto's its key and password file."""
        svc, mosq = self.service, self.mosquitto_gid
        return {"service": svc, "service_group": (0, svc[1]) if svc else None,
                "mosquitto": (0, mosq) if mosq is not None else None, "root": (0, 0) if svc else None}

    def temp_files(self) -> list[Path]:
        """What a write cut short (a crash, a power cut) leaves behind: _write's temporary files."""
        found = [p for p in self.etc.rglob(".*.tmp")] if self.etc.exists() else []
        return found + [p for p in (_temp_of(self.broker_conf), _temp_of(self.unit), _temp_of(self.web_unit))
                        if p.exists()]


def _gateway_key(lay: Layout, changed: list) -> ec.EllipticCurvePrivateKey:
    if lay.key.exists():
        return serialization.load_pem_private_key(lay.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    _write(lay.key, _pem_key(key), 0o600, changed, lay.owners()["service"])
    return key


def _credentials(lay: Layout, devices: list[str], changed: list) -> dict[str, str]:
    """One password per device and one for the gateway; existing ones are kept. The password file is
    written here, never by mosquitto_passwd: a password on a command line is readable by every user."""
    creds = json.loads(lay.credentials.read_text()) if lay.credentials.exists() else {}
    for user in [GATEWAY_USER, *devices]:
        creds.setdefault(user, secrets.token_urlsafe(24))
    _write(lay.credentials, json.dumps(creds, indent=1, sort_keys=True) + "\n", 0o600, changed,
           lay.owners()["root"])
    password_file(lay.passwd, creds, changed, lay.owners()["mosquitto"])
    return creds


def _acl() -> str:
    """The gateway reads the node topics and writes the nodes' acknowledgements; a device writes its own two
    topics and reads its own acknowledgements, nothing else; a login's client id is its user name
    (_broker_conf)."""
    return (
        "# written by govedge gateway install: who may publish and read what on the gateway's broker\n"
        f"user {GATEWAY_USER}\n"
        f"topic read {topics.ALL_READINGS}\n"
        f"topic read {topics.ALL_STATUS}\n"
        f"topic write {topics.ack('+')}\n\n"
        "# every device (user name = device id) may publish to its own topics and read the gateway's\n"
        "# acknowledgements of its own messages, and nothing else\n"
        f"pattern write {topics.PREFIX}/%u/reading\n"
        f"pattern write {topics.PREFIX}/%u/status\n"
        f"pattern read {topics.ack('%u')}\n"
    )


def max_publish_packet_bytes() -> int:
    """The largest MQTT PUBLISH a device needs: a message of the most the decoder accepts on the
    longest topic a device may publish to, QoS 1, MQTT 5 (section 3.3; MQTT 3.1.1 has no properties).

    Mosquitto 2.0 counts a packet without its remaining-length bytes and so takes up to 2 bytes
    more; message_size_limit holds the message itself to the exact limit."""
    longest_id = "x" * wire.MAX_DEVICE_ID_CHARS
    topic = max(len(topics.reading(longest_id).encode()), len(topics.status(longest_id).encode()))
    # topic name with its 2-byte length, packet identifier, property length (no properties), payload
    remaining = 2 + topic + 2 + 1 + wire.MAX_MESSAGE_BYTES
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16384) + (remaining >= 2097152)  # section 1.5.5
    return 1 + length_bytes + remaining  # the packet type byte, the remaining length, the rest


def _broker_conf(lay: Layout, port: int) -> str:
    return (
        "# written by govedge gateway install: the local broker the nodes publish to\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {lay.passwd}\n"
        f"acl_file {lay.acl}\n"
        f"listener {port}\n"
        f"cafile {lay.tls / 'ca.pem'}\n"
        f"certfile {lay.tls / 'broker.pem'}\n"
        f"keyfile {lay.tls / 'broker.key'}\n"
        "tls_version tlsv1.2\n"
        "# a client's id is its login, whatever it sent: no device can take over the gateway's session\n"
        "# (or another device's) by connecting with its client id\n"
        "use_username_as_clientid true\n"
        "# the gateway's persistent session keeps the nodes' messages while it restarts; Debian's\n"
        "# mosquitto.conf turns persistence on (setting it here again would be a duplicate, an error)\n"
        "# no queue limit: a full queue drops a message silently after its PUBACK told the node it was\n"
        "# safe (the nodes' buffers would forget it); the gateway's store refuses by not acknowledging\n"
        "max_queued_messages 0\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 1000\n"
        "# nothing larger than the gateway accepts (govedge.core.wire.MAX_MESSAGE_BYTES): a larger message is\n"
        "# dropped; a packet larger than such a message on the longest device topic ends the connection\n"
        f"message_size_limit {wire.MAX_MESSAGE_BYTES}\n"
        f"max_packet_size {max_publish_packet_bytes()}\n"
    )


def _toml(o: Options, lay: Layout, password: str, old: dict) -> str:
    def q(v) -> str:
        return json.dumps(v)  # a TOML basic string is a JSON string

    hub = [f"host = {q(o.hub_host)}", f"port = {o.hub_port}", "tls = true"]
    old_hub = old.get("hub", {})
    for k, v in (("ca", o.hub_ca or old_hub.get("ca")), ("cert", o.hub_cert or old_hub.get("cert")),
                 ("key", o.hub_key or old_hub.get("key"))):
        if v:
            hub.append(f"{k} = {q(str(v))}")
    hub_password = _hub_password(o) or old_hub.get("password")
    if hub_password:
        hub += [f"user = {q(o.gateway_id)}", f"password = {q(hub_password)}"]
    anchor = [f"backend = {q(o.anchor)}", f"epoch_s = {old.get('anchor', {}).get('epoch_s', 600)}"]
    if o.anchor != NO_ANCHORING:
        anchor.append(f"\n[anchor.{o.anchor}]")
        anchor += [f"{k} = {q(v) if isinstance(v, str) else v}" for k, v in sorted(o.anchor_settings.items())]
    return "\n".join([
        "# written by govedge gateway install; gateway/gateway.toml in the source explains every key",
        "[gateway]", f"id = {q(o.gateway_id)}", f"key_file = {q(str(lay.key))}", f"data_dir = {q(str(lay.data))}",
        f"registry = {q(str(lay.registry))}", "",
        "[ingest.mqtt]", 'host = "127.0.0.1"', f"port = {o.broker_port}", "tls = true",
        f"ca = {q(str(lay.tls / 'ca.pem'))}", f"user = {q(GATEWAY_USER)}", f"password = {q(password)}", "",
        "[hub]", *hub, "",
        "[metrics]", f"port = {old.get('metrics', {}).get('port', 9108)}", "",
        "[anchor]", *anchor, "",
    ])


def _hub_password(o: Options) -> str | None:
    """The gateway's password on the hub broker, from the file the hub operator handed over (its first line)."""
    if o.hub_password_file is None:
        return None
    try:
        lines = Path(o.hub_password_file).read_text().splitlines()
    except OSError as exc:
        raise InstallError(f"--hub-password-file {o.hub_password_file}: {exc.strerror or exc}") from None
    if not lines or not lines[0].strip():
        raise InstallError(f"--hub-password-file {o.hub_password_file} is empty: it holds the password the hub's "
                           f"`govedge hub install --gateway {o.gateway_id}` wrote")
    return lines[0].strip()


def _unit(lay: Layout, user: str, template: Path = UNIT_TEMPLATE) -> str:
    import grp

    group = grp.getgrgid(lay.service[1]).gr_name if lay.service else user
    text = template.read_text()
    return text.replace("--config /etc/govedge/gateway.toml", f"--config {lay.toml}").replace(
        "ReadWritePaths=/var/lib/govedge", f"ReadWritePaths={lay.data}").replace(
        f"User={SERVICE_USER}\nGroup={SERVICE_USER}\n", f"User={user}\nGroup={group}\n")


def _update_devices(o: Options, lay: Layout, creds: dict[str, str], changed: list) -> list[str]:
    """Each provisioned device's config gets its credential, TLS and the broker; returns the devices done."""
    done = []
    if o.devices is None:
        return done
    ca_der = (lay.tls / "ca.der").read_bytes()
    for folder in sorted(p for p in o.devices.iterdir() if (p / "config.json").exists()):
        device = folder.name
        if device not in creds:
            continue
        cfg = json.loads((folder / "config.json").read_text())
        if "mqtt" not in cfg:
            continue  # a wired node: the serial line needs no credential
        cfg["mqtt"].update(host=o.broker_names[0], port=o.broker_port, tls=True, user=device,
                           password=creds[device], ca="ca.der")
        _write(folder / "config.json", json.dumps(cfg, indent=1) + "\n", 0o600, changed)
        _write(folder / "ca.der", ca_der, 0o644, changed)
        done.append(device)
    return done


def install(o: Options) -> dict:
    """Puts everything in place; returns what changed (a second run changes nothing). On the Pi (root
    /) it creates the service user first; under another root it only writes files."""
    lay = Layout(o.root)
    changed: list[Path] = []
    if o.root == Path("/"):
        require_debian_packages()
    if not o.broker_names:
        o.broker_names = [socket.gethostname() + ".local", "127.0.0.1"]
    hub_broker = o.root / "etc/mosquitto/conf.d/govedge-hub.conf"
    if hub_broker.exists():
        raise InstallError(f"{hub_broker} is there: this host is the hub, and its Mosquitto cannot also be a "
                           "gateway's (one password file, one ACL); install the gateway on a host of its own")
    lay.service, lay.mosquitto_gid = accounts(o.root, o.service_user, "gateway")
    for stale in lay.temp_files():
        stale.unlink()
    key = _gateway_key(lay, changed)
    _write(lay.pub, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo), 0o644, changed)
    if o.registry is not None:
        _write(lay.registry, Path(o.registry).read_bytes(), 0o644, changed)
    elif not lay.registry.exists():
        Registry(path=lay.registry).save()
        changed.append(lay.registry)
    registry = Registry.load(lay.registry)
    if GATEWAY_USER in registry.devices:
        raise InstallError(f"a device in {lay.registry} is named {GATEWAY_USER!r}, the gateway's own login on "
                           "its broker: give the device another id (govedge provision)")
    broker_tls(lay.tls, "govchain-edge gateway CA", list(dict.fromkeys(o.broker_names + ["127.0.0.1"])), changed,
               lay.owners()["root"], lay.owners()["mosquitto"])  # the gateway itself uses 127.0.0.1
    creds = _credentials(lay, sorted(registry.devices), changed)
    _write(lay.acl, _acl(), 0o644, changed)
    _write(lay.broker_conf, _broker_conf(lay, o.broker_port), 0o644, changed)
    lay.data.mkdir(mode=0o750, parents=True, exist_ok=True)
    _settle(lay.data, 0o750, lay.owners()["service"])
    old = tomllib.loads(lay.toml.read_text()) if lay.toml.exists() else {}
    _write(lay.toml, _toml(o, lay, creds[GATEWAY_USER], old), 0o640, changed, lay.owners()["service_group"])
    _write(lay.unit, _unit(lay, o.service_user), 0o644, changed)
    _write(lay.web_unit, _unit(lay, o.service_user, WEB_UNIT_TEMPLATE), 0o644, changed)
    configured = _update_devices(o, lay, creds, changed)
    return {"changed": [str(p.relative_to(o.root)) if p.is_relative_to(o.root) else str(p) for p in changed],
            "changed_paths": changed, "devices": sorted(registry.devices),
            "configured_devices": configured, "layout": lay}


def service_commands(result: dict) -> list[list[str]]:
    """What start_services runs for an install's result: systemd rereads the units, Mosquitto and the
    gateway service are enabled and started. Mosquitto is restarted when its configuration or TLS files
    changed (it rereads neither its listener nor use_username_as_clientid on a reload) and reloaded when
    only its password file or ACL did (a new device: the connected nodes and the gateway's session stay);
    the gateway service is restarted when its key, config or unit changed (a new registry it rereads by
    itself)."""
    lay: Layout = result["layout"]
    changed = set(result["changed_paths"])
    listener_files = {lay.broker_conf, lay.tls / "broker.pem", lay.tls / "broker.key", lay.tls / "ca.pem"}
    login_files = {lay.passwd, lay.acl}
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "mosquitto.service"]]
    if changed & listener_files:
        commands.append(["systemctl", "restart", "mosquitto.service"])
    elif changed & login_files:
        commands.append(["systemctl", "reload", "mosquitto.service"])
    commands.append(["systemctl", "enable", "--now", "govedge-gateway.service"])
    if changed & {lay.toml, lay.key, lay.unit}:
        commands.append(["systemctl", "restart", "govedge-gateway.service"])
    commands.append(["systemctl", "enable", "--now", "govedge-gateway-web.service"])
    if changed & {lay.toml, lay.web_unit}:
        commands.append(["systemctl", "restart", "govedge-gateway-web.service"])
    return commands


def start_services(result: dict) -> list[str]:
    """Runs service_commands(result); returns the commands run. Only for an install into / on a system
    that systemd runs (a Pi booted into Raspberry Pi OS)."""
    lay: Layout = result["layout"]
    if lay.root != Path("/"):
        raise InstallError(f"services are started only for an install into /, not {lay.root}")
    if not systemd_running():
        raise InstallError("systemd does not run this system (no /run/systemd/system): the files are in place; "
                           "start mosquitto and `govedge gateway run --config /etc/govedge/gateway.toml` by other "
                           "means, or give --no-start")
    return [_run(command) for command in service_commands(result)]


# -- the self-test ---------------------------------------------------------------------------


def self_test(toml: Path, check_clock: Callable[[], tuple[bool | None, str]] | None = None,
              started_at: float | None = None, wait_s: float = 60.0) -> list[tuple[str, bool | None, str]]:
    """(check, passed (None: could not tell), what was found) for each point of the checklist; the checks
    are `govedge gateway check`'s (govedge.gateway.check). With ``started_at`` (the time start_services
    began) the running service is checked first: it must have written its live.json since then and be
    connected to its local broker within ``wait_s``."""
    from govedge.core import check as shared

    from . import check

    cfg, result = check.configuration(toml)
    if cfg is None:
        return [result]
    results = [result]
    if started_at is not None:
        results.append(_check_service(cfg, started_at, wait_s))
        results.append(_check_page(cfg, wait_s))
    return results + [check.local_broker(cfg), shared.registry(cfg.registry), check.hub_broker(cfg, "hub"),
                      check.chain(cfg), check.disk_space(cfg), ("clock", *(check_clock or check.clock_synchronised)())]


def _check_page(cfg, wait_s: float) -> tuple[str, bool, str]:
    """The status page (govedge-gateway-web) answers with the status document, from this machine."""
    import json
    import urllib.request

    host = "127.0.0.1" if cfg.web_host in ("0.0.0.0", "::", "") else cfg.web_host
    url = f"http://{f'[{host}]' if ':' in host else host}:{cfg.web_port}/"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as response:
                doc = json.load(response)
            return ("status page", True, f"{url} shows gateway {doc['gateway_id']} ([web] host {cfg.web_host})")
        except (OSError, ValueError, KeyError) as exc:
            if time.monotonic() > deadline:
                return ("status page", False, f"{url} does not answer ({exc}): journalctl -u govedge-gateway-web "
                                              "says why")
        time.sleep(0.5)


def _check_service(cfg, started_at: float, wait_s: float) -> tuple[str, bool, str]:
    """The service systemd started: its live.json, written since ``started_at``, says it runs, and its
    ingest (the local broker) and uplink (the hub) states. A service that does not come up within
    ``wait_s`` is named with where its log is."""
    from .health import live

    deadline = time.monotonic() + wait_s
    while True:
        state = live(cfg.data_dir)
        fresh = state is not None and state.get("running") and state.get("started_at", 0) >= started_at - 1
        parts = (state or {}).get("parts", {})
        if fresh and (parts.get("ingest") or {}).get("ok"):
            uplink = parts.get("uplink") or {}
            return ("service", True, f"govedge-gateway runs (process {state['pid']}); ingest: "
                                     f"{parts['ingest']['state']}; uplink: {uplink.get('state', 'not yet connected')}")
        if time.monotonic() > deadline:
            if not fresh:
                return ("service", False, f"govedge-gateway wrote no {cfg.data_dir / 'live.json'} within {wait_s:g} s "
                                          "of its start: journalctl -u govedge-gateway says why")
            return ("service", False, f"govedge-gateway runs (process {state['pid']}) but its ingest is not "
                                      f"connected: {(parts.get('ingest') or {}).get('state', 'no state yet')}")
        time.sleep(0.5)
