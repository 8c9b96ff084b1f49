"""`govedge hub install`: a Debian host made into the hub, or a folder made into one.

What it puts in place (paths under ``root``, which is / on the hub host):

    etc/govedge/hub-<n>.toml                 one configuration per worker n (hub/hub.toml explains every key);
                                             each worker has its own client id on the broker
    etc/govedge/registry.json                the device registry (from --registry; kept if there)
    etc/govedge/gateways.json                the gateways and their keys (govedge hub add-gateway; kept)
    etc/govedge/hub/tls/                     a CA of the hub's own and the hub broker's certificate; the
                                             gateways get tls/ca.pem (gateway install --hub-ca)
    etc/govedge/hub/mosquitto/passwd         one login for the workers ("hub") and one per gateway
    etc/govedge/hub/mosquitto/acl            each gateway writes and reads only its own topics
    etc/govedge/hub/credentials.json         the passwords, owner only
    etc/govedge/hub/hub-key.pem              the hub's report-signing key ([hub] key), owner only (root);
                                             hub-key.pub.pem beside it for verifiers (docs/REPORT.md)
    etc/govedge/hub/gateway-passwords/<id>   each gateway's password alone, owner only: the file its
                                             technician gives to gateway install --hub-password-file
    etc/mosquitto/conf.d/govedge-hub.conf    the hub broker: TLS only, no anonymous clients, the ACL, no
                                             message larger than the largest batch
    etc/systemd/system/govedge-hub@.service  the workers' unit; govedge-hub@1 ... govedge-hub@<n> enabled
    var/lib/govedge/                         the workers' state (and the SQLite store, when there is one)

The gateways' topics (govedge.core.topics; docs/FORMAT.md, "Acknowledgements between gateway and
hub"): a gateway logs in with its id as user name and may publish only to its own batch, epoch and
status topics and read only its own committed topic; the workers' login reads every gateway's batch,
epoch and status topics and writes every committed topic. A message larger than the largest batch the
hub decodes (``message_size_limit 8388608``, govedge.core.batch.MAX_BATCH_BYTES) is dropped, and a
packet larger than that and 1024 bytes for its topic and header (``max_packet_size 8389632``) ends the
sender's connection before the broker reads it in.

A gateway the hub already knows (gateways.json) gets its login with every install; ``--gateway ID``
gives one to a gateway before its key is added. Running it again changes nothing that is there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from govedge.core import topics, wire
from govedge.core.batch import MAX_BATCH_BYTES
from govedge.core.install import (InstallError, accounts, broker_tls, password_file, require_debian_packages, run,
                                  settle, systemd_running, temp_of, write)
from govedge.core.registry import Registry

from .gateways import Gateways

HUB_USER = "hub"  # the workers' login on the hub broker
SERVICE_USER = "govedge"  # the system user the workers run as (hub/govedge-hub@.service)
UNIT_TEMPLATE = Path(__file__).with_name("govedge-hub@.service")
PACKET_OVERHEAD_BYTES = 1024  # a batch's topic, the packet's header and MQTT 5 properties


@dataclass
class Options:
    root: Path
    broker_port: int = 8883
    broker_names: list[str] = field(default_factory=list)  # host names and addresses the gateways use
    registry: Path | None = None
    store: str | None = None  # hub.toml [store] url; default: SQLite in the state folder
    workers: int = 1
    gateways: list[str] = field(default_factory=list)  # gateway ids that get a login now
    service_user: str = SERVICE_USER  # created on the host; under another root, used only if it exists


class Layout:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc/govedge"
        self.hub = self.etc / "hub"
        self.tls = self.hub / "tls"
        self.passwd = self.hub / "mosquitto/passwd"
        self.acl = self.hub / "mosquitto/acl"
        self.credentials = self.hub / "credentials.json"
        self.gateway_passwords = self.hub / "gateway-passwords"
        self.report_key = self.hub / "hub-key.pem"  # signs reports (govedge hub report); kept once made
        self.report_public_key = self.hub / "hub-key.pub.pem"
        self.registry = self.etc / "registry.json"
        self.gateways = self.etc / "gateways.json"
        self.broker_conf = root / "etc/mosquitto/conf.d/govedge-hub.conf"
        self.unit = root / "etc/systemd/system/govedge-hub@.service"
        self.data = root / "var/lib/govedge"
        self.service: tuple[int, int] | None = None  # (uid, gid) of the service user, when files get it
        self.mosquitto_gid: int | None = None

    def toml(self, worker: int) -> Path:
        return self.etc / f"hub-{worker}.toml"

    def owners(self) -> dict[str, tuple[int, int] | None]:
        svc, mosq = self.service, self.mosquitto_gid
        return {"service": svc, "service_group": (0, svc[1]) if svc else None,
                "mosquitto": (0, mosq) if mosq is not None else None, "root": (0, 0) if svc else None}


def max_publish_packet_bytes() -> int:
    """The largest packet the hub broker reads in: the largest batch and PACKET_OVERHEAD_BYTES."""
    return MAX_BATCH_BYTES + PACKET_OVERHEAD_BYTES


def _acl() -> str:
    """The workers read what the gateways publish and write the confirmations; a gateway (user name =
    its id) writes its own three topics and reads its own confirmations, nothing else."""
    return (
        "# written by govedge hub install: who may publish and read what on the hub's broker\n"
        f"user {HUB_USER}\n"
        f"topic read {topics.ALL_BATCHES}\n"
        f"topic read {topics.ALL_EPOCHS}\n"
        f"topic read {topics.ALL_GATEWAY_STATUS}\n"
        f"topic write {topics.committed('+')}\n\n"
        "# every gateway (user name = gateway id) may publish its batches, epoch records and status\n"
        "# and read the hub's confirmations of its own, and nothing else\n"
        f"pattern write {topics.batch('%u')}\n"
        f"pattern write {topics.epoch('%u')}\n"
        f"pattern write {topics.gateway_status('%u')}\n"
        f"pattern read {topics.committed('%u')}\n"
    )


def _broker_conf(lay: Layout, port: int) -> str:
    return (
        "# written by govedge hub install: the hub's broker the gateways publish to\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {lay.passwd}\n"
        f"acl_file {lay.acl}\n"
        f"listener {port}\n"
        f"cafile {lay.tls / 'ca.pem'}\n"
        f"certfile {lay.tls / 'broker.pem'}\n"
        f"keyfile {lay.tls / 'broker.key'}\n"
        "tls_version tlsv1.2\n"
        "# nothing larger than the largest batch the hub decodes (govedge.core.batch.MAX_BATCH_BYTES): a\n"
        "# larger message is dropped; a larger packet ends the connection before it is read in. A gateway\n"
        "# sends again what the hub has not confirmed: a batch the broker drops is not lost\n"
        f"message_size_limit {MAX_BATCH_BYTES}\n"
        f"max_packet_size {max_publish_packet_bytes()}\n"
    )


def _toml(o: Options, lay: Layout, worker: int, password: str) -> str:
    def q(v) -> str:
        return json.dumps(v)  # a TOML basic string is a JSON string

    store = o.store or str(lay.data / "hub.db")
    return "\n".join([
        "# written by govedge hub install; hub/hub.toml in the source explains every key",
        "[hub]", f"registry = {q(str(lay.registry))}", f"gateways = {q(str(lay.gateways))}",
        f"state_dir = {q(str(lay.data))}", f"key = {q(str(lay.report_key))}", "",
        "[store]", f"url = {q(store)}", "",
        "[mqtt]", 'host = "127.0.0.1"', f"port = {o.broker_port}",
        f"client_id = {q(f'govedge-hub-{socket.gethostname()}-{worker}')}", "tls = true",
        f"ca = {q(str(lay.tls / 'ca.pem'))}", f"user = {q(HUB_USER)}", f"password = {q(password)}", "",
    ])


def _report_key(lay: Layout, changed: list) -> None:
    """The hub's report-signing key, made once and kept (reports signed before are verified with it), and
    its public key for verifiers."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if lay.report_key.exists():
        key = serialization.load_pem_private_key(lay.report_key.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write(lay.report_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()), 0o600, changed, lay.owners()["root"])
    write(lay.report_public_key, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644, changed)


def _unit(lay: Layout, user: str) -> str:
    import grp

    group = grp.getgrgid(lay.service[1]).gr_name if lay.service else user
    return UNIT_TEMPLATE.read_text().replace(
        "--config /etc/govedge/hub-%i.toml", f"--config {lay.etc}/hub-%i.toml").replace(
        "ReadWritePaths=/var/lib/govedge", f"ReadWritePaths={lay.data}").replace(
        f"User={SERVICE_USER}\nGroup={SERVICE_USER}\n", f"User={user}\nGroup={group}\n")


def install(o: Options) -> dict:
    """Puts everything in place; returns what changed (a second run changes nothing)."""
    if o.workers < 1:
        raise InstallError(f"--workers {o.workers}: at least one worker")
    lay = Layout(o.root)
    changed: list[Path] = []
    if o.root == Path("/"):
        require_debian_packages()
    if not o.broker_names:
        o.broker_names = [socket.getfqdn(), "127.0.0.1"]
    gateway_broker = o.root / "etc/mosquitto/conf.d/govedge.conf"
    if gateway_broker.exists():
        raise InstallError(f"{gateway_broker} is there: this host is a gateway, and its Mosquitto cannot also be "
                           "the hub's (one password file, one ACL); install the hub on a host of its own")
    lay.service, lay.mosquitto_gid = accounts(o.root, o.service_user, "hub")
    for stale in [*lay.etc.rglob(".*.tmp"), temp_of(lay.broker_conf), temp_of(lay.unit)] if lay.etc.exists() else []:
        stale.unlink(missing_ok=True)
    if o.registry is not None:
        write(lay.registry, Path(o.registry).read_bytes(), 0o644, changed)
    elif not lay.registry.exists():
        Registry(path=lay.registry).save()
        changed.append(lay.registry)
    Registry.load(lay.registry)  # a broken registry is named now, not by the workers' first start
    if not lay.gateways.exists():
        Gateways(path=lay.gateways).save()
        changed.append(lay.gateways)
    known = set(Gateways.load(lay.gateways).doc["gateways"])
    for gateway_id in {*known, *o.gateways}:
        if not wire.DEVICE_ID.match(gateway_id) or gateway_id == HUB_USER:
            raise InstallError(f"gateway id {gateway_id!r} cannot log in to the hub broker: letters, digits, '.', "
                               f"'_', '-', and not {HUB_USER!r} (the workers' login)")
    broker_tls(lay.tls, "govchain-edge hub CA", list(dict.fromkeys(o.broker_names + ["127.0.0.1"])), changed,
               lay.owners()["root"], lay.owners()["mosquitto"])
    creds = json.loads(lay.credentials.read_text()) if lay.credentials.exists() else {}
    for user in [HUB_USER, *sorted(known | set(o.gateways))]:
        creds.setdefault(user, secrets.token_urlsafe(24))
    write(lay.credentials, json.dumps(creds, indent=1, sort_keys=True) + "\n", 0o600, changed, lay.owners()["root"])
    for gateway_id in sorted(set(creds) - {HUB_USER}):
        write(lay.gateway_passwords / gateway_id, creds[gateway_id] + "\n", 0o600, changed, lay.owners()["root"])
    _report_key(lay, changed)
    password_file(lay.passwd, creds, changed, lay.owners()["mosquitto"])
    write(lay.acl, _acl(), 0o644, changed)
    write(lay.broker_conf, _broker_conf(lay, o.broker_port), 0o644, changed)
    lay.data.mkdir(mode=0o750, parents=True, exist_ok=True)
    settle(lay.data, 0o750, lay.owners()["service"])
    for worker in range(1, o.workers + 1):
        write(lay.toml(worker), _toml(o, lay, worker, creds[HUB_USER]), 0o640, changed, lay.owners()["service_group"])
    write(lay.unit, _unit(lay, o.service_user), 0o644, changed)
    return {"changed": [str(p.relative_to(o.root)) if p.is_relative_to(o.root) else str(p) for p in changed],
            "changed_paths": changed, "gateways": sorted(set(creds) - {HUB_USER}), "workers": o.workers,
            "layout": lay}


def service_commands(result: dict) -> list[list[str]]:
    """systemd rereads the units; Mosquitto and every worker are enabled and started. Mosquitto is
    restarted when its configuration or TLS files changed (it rereads neither its listener nor its TLS
    files on a reload) and reloaded when only its password file or ACL did (a new gateway: the others
    stay connected); a worker is restarted when its hub-N.toml or the unit changed (the registry and
    gateways.json the workers reread by themselves)."""
    lay: Layout = result["layout"]
    changed = set(result["changed_paths"])
    listener_files = {lay.broker_conf, lay.tls / "broker.pem", lay.tls / "broker.key", lay.tls / "ca.pem"}
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "mosquitto.service"]]
    if changed & listener_files:
        commands.append(["systemctl", "restart", "mosquitto.service"])
    elif changed & {lay.passwd, lay.acl}:
        commands.append(["systemctl", "reload", "mosquitto.service"])
    for worker in range(1, result["workers"] + 1):
        unit = f"govedge-hub@{worker}.service"
        commands.append(["systemctl", "enable", "--now", unit])
        if changed & {lay.toml(worker), lay.unit}:
            commands.append(["systemctl", "restart", unit])
    return commands


def start_services(result: dict) -> list[str]:
    """Runs service_commands(result); returns the commands run. Only for an install into / under systemd."""
    lay: Layout = result["layout"]
    if lay.root != Path("/"):
        raise InstallError(f"services are started only for an install into /, not {lay.root}")
    if not systemd_running():
        raise InstallError("systemd does not run this system (no /run/systemd/system): the files are in place; "
                           "start mosquitto and `govedge hub run --config /etc/govedge/hub-1.toml` by other "
                           "means, or give --no-start")
    return [run(command) for command in service_commands(result)]


# -- the self-test ---------------------------------------------------------------------------


def self_test(result: dict, started: bool = False, steady_s: float = 5.0,
              wait_s: float = 60.0) -> list[tuple[str, bool | None, str]]:
    """(check, passed (None: could not tell), what was found): each worker's configuration, the broker's
    answer to the workers' login and to each gateway's, the store, and with ``started`` each worker as
    systemd runs it (running, and not restarted, for ``steady_s``)."""
    from . import config as hubconfig
    from .store import HubStore, StoreError

    lay: Layout = result["layout"]
    creds = json.loads(lay.credentials.read_text())
    results: list[tuple[str, bool | None, str]] = []
    cfg = None
    for worker in range(1, result["workers"] + 1):
        try:
            cfg = hubconfig.load(lay.toml(worker))
            results.append((f"configuration {worker}", True, f"{lay.toml(worker)} is valid"))
        except hubconfig.ConfigError as exc:
            results.append((f"configuration {worker}", False, str(exc)))
    if cfg is None:
        return results
    ep = cfg.mqtt
    results.append(("hub broker", *_login(ep.host, ep.port, ep.ca, HUB_USER, creds[HUB_USER])))
    for gateway_id in result["gateways"]:
        ok, text = _login(ep.host, ep.port, ep.ca, gateway_id, creds[gateway_id])
        results.append((f"gateway {gateway_id}", ok, text))
    if started:
        for worker in range(1, result["workers"] + 1):
            results.append((f"worker {worker}", *_steady(f"govedge-hub@{worker}.service", steady_s, wait_s)))
    results.append(_check_store(cfg, HubStore, StoreError))
    usage = shutil.disk_usage(lay.data)
    results.append(("disk space", usage.free > 1e9, f"{usage.free / 1e9:.1f} GB free at {lay.data}"))
    return results


def _check_store(cfg, HubStore, StoreError) -> tuple[str, bool | None, str]:
    """PostgreSQL: the store opens with the workers' settings. SQLite: the file is left to the workers (a
    file the install made as root would be root's, and the workers could not write it)."""
    if cfg.store.startswith("sqlite://"):
        path = Path(cfg.store.removeprefix("sqlite://"))
        if not path.exists():
            return ("store", None, f"{path} does not exist yet: the first worker makes it at its start")
        return ("store", True, f"{path} is there ({path.stat().st_size} bytes)")
    try:
        HubStore(cfg.store, synchronous=cfg.synchronous).close()
        return ("store", True, f"{_redacted(cfg.store)} opens")
    except (StoreError, OSError) as exc:
        return ("store", False, f"{_redacted(cfg.store)}: {exc}")


def _redacted(url: str) -> str:
    from govedge.core import redact

    return redact.text(url)


def _login(host: str, port: int, ca: str | None, user: str, password: str) -> tuple[bool, str]:
    """Whether the broker accepts ``user``'s login over TLS (a client id of the test's own: the login's
    running session is left alone)."""
    import paho.mqtt.client as paho

    result: dict = {}
    done = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"govedge-install-check-{os.getpid()}-{user}")
    c.username_pw_set(user, password)
    c.tls_set(ca_certs=ca)

    def on_connect(client, userdata, flags, reason, properties):
        result["reason"] = reason
        done.set()

    c.on_connect = on_connect
    try:
        c.connect(host, port, 10)
    except Exception as exc:  # noqa: BLE001 - the check names any fault
        return False, f"{host}:{port} unreachable: {exc} (is mosquitto running?)"
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    reason = result.get("reason")
    if reason is None:
        return False, f"{host}:{port} did not answer"
    if reason.is_failure:
        return False, f"{host}:{port} refused {user!r}: {reason}"
    return True, f"TLS login to {host}:{port} as {user!r} accepted"


def _steady(unit: str, steady_s: float, wait_s: float) -> tuple[bool, str]:
    """A worker systemd runs and has not restarted for ``steady_s`` (one that fails at its start, such as
    on a store it cannot reach, is restarted by systemd every 2 s: Restart=always)."""
    def show() -> dict[str, str]:
        out = subprocess.run(["systemctl", "show", "-p", "ActiveState,SubState,MainPID,NRestarts", unit],
                             capture_output=True, text=True, timeout=30).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    deadline = time.monotonic() + wait_s
    first = show()
    while time.monotonic() < deadline:
        time.sleep(steady_s)
        now = show()
        if now.get("SubState") == "running" and now == first:
            return True, f"{unit} runs (process {now['MainPID']})"
        first = now
    return False, (f"{unit} is {first.get('ActiveState')}/{first.get('SubState')}, restarted "
                   f"{first.get('NRestarts', '?')} times: journalctl -u {unit} says why")
