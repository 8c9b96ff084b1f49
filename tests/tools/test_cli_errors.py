"""Every `govedge` command, given each kind of bad input it takes, ends with one line on standard error that
names what is wrong, the exit status of its kind, and never a traceback.

The commands are found by walking the CLI's own parser: a command added without its cases here fails
test_every_command_has_its_bad_inputs. Each case runs the real command as its own process against real
files (a SQLite store, a registry, a TOML config). Unreadable files are tried by a process the kernel holds
to the files' modes: as root (which reads everything) without the capabilities that override them."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from govedge.tools import cli

# commands not run here, and why
NOT_RUN = {
    ("demo",): "a whole deployment (nodes, brokers, chain) for minutes; it takes no file but --workdir, which it "
               "makes",
    ("bench",): "measures for minutes and takes no input file; its flags are numbers argparse checks",
    ("flash",): "needs a board on a serial port (tests/tools/test_flash.py runs it against a virtual board, "
                "with its errors)",
    ("monitor",): "takes only a serial port, and waits for it when it is missing (a board not plugged in yet); "
                  "its Ctrl-C is tested below",
}

NOBODY = pwd.getpwnam("nobody")
# root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: file modes hold for it as for any user
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
GARBAGE_DB = b"these bytes are no SQLite database " * 200


@dataclass
class Case:
    """One bad input: the command's arguments ({d} is the world's folder), what is done to the world first,
    the exit status, what the line must say, and whether file modes hold for it (for unreadable files)."""

    args: str
    spoil: Callable[[Path], None] = lambda d: None
    status: int = 2
    says: tuple[str, ...] = ()
    unprivileged: bool = False


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def spoil(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return spoil


def unreadable(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).chmod(0)


def owned_by_nobody(rel: str) -> Callable[[Path], None]:
    def spoil(d: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        for path in [d / rel, *(d / rel).rglob("*")]:
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return spoil


def append(rel: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).write_text((d / rel).read_text() + text)


def both(*spoils) -> Callable[[Path], None]:
    return lambda d: [s(d) for s in spoils]


GATEWAY_TOML = ('[gateway]\nid = "gw-err-01"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "registry.json"\n'
                '[ingest.mqtt]\nhost = "127.0.0.1"\nport = 1\n[hub]\nhost = "127.0.0.1"\nport = 1\n')


NOT_TOML = "[gateway\nid = \n"
NOT_JSON = "{\"format\": \"govedge-registry/1\", \"devices\": {"
GW = "gateway {c} --config {d}/gateway.toml"
HUB = "hub {c} --config {d}/hub.toml"


def config_cases(words: str, config: str, rest: str = "", status: int = 2) -> list[Case]:
    """The bad config files any command that reads a TOML config meets: missing, a folder, unreadable, not
    TOML. ``rest``: the command's other arguments."""
    return [
        Case(f"{words} --config {{d}}/missing.toml{rest}", says=("missing.toml",), status=status),
        Case(f"{words} --config {{d}}/data{rest}", says=("data",), status=status),
        Case(f"{words} --config {{d}}/{config}{rest}", unreadable(config), says=(config, "not readable by this user"),
             unprivileged=True, status=status),
        Case(f"{words} --config {{d}}/{config}{rest}", write(config, NOT_TOML), says=(config, "TOML"), status=status),
    ]


def hub_key(d: Path) -> None:
    """The hub's report key where hub.toml's [hub] key (by default) names it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (d / "hub-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (d / "hub-key.pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def a_report(d: Path) -> None:
    """A good signed report of esp32-0001 (no readings) in report.cbor, and the hub's public key."""
    from cryptography.hazmat.primitives import serialization

    from govedge.core import report

    hub_key(d)
    key = serialization.load_pem_private_key((d / "hub-key.pem").read_bytes(), password=None)
    period = report.period_of("2026-03-04", "2026-03-04")
    body = report.body("esp32-0001", period, 60, report.Figures(period), report.Commitment(),
                       report.hub_key_id(key.public_key()), 1_764_400_000)
    (d / "report.cbor").write_bytes(report.file_bytes(report.sign(key, body)))
    (d / "readings.cbors").write_bytes(b"")


REPORT = "hub report --config {d}/hub.toml --station esp32-0001"
VERIFY_REPORT = "verify-report {d}/report.cbor --readings {d}/readings.cbors --registry {d}/registry.json"

CASES: dict[tuple[str, ...], list[Case]] = {
    ("provision",): [
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices --tls "
             "--ca {d}/missing-ca.pem", says=("--ca", "missing-ca.pem")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices --tls --ca {d}/data",
             says=("--ca", "data")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices --tls --ca {d}/ca.pem",
             write("ca.pem", "not a certificate"), says=("ca.pem", "X.509")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices",
             write("registry.json", NOT_JSON), says=("registry.json",)),
        Case("provision esp32-0100 --board esp32 --registry {d}/data --out {d}/devices", says=("data",)),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices",
             unreadable("registry.json"), says=("registry.json", "permission denied"), unprivileged=True),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices",
             write("registry.json", '{"format": "govedge-registry/1", "devices": {"esp32-0001": 5}}'),
             says=("registry.json", "esp32-0001")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/gateway.key",
             says=("gateway.key",)),  # --out is a file
        Case("provision esp32-0100 --board esp32 --interval ten", says=("--interval", "'ten'")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices --interval 0",
             says=("--interval 0",)),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices "
             "--location 51.96,181", says=("--location 51.96,181", "longitude 181")),
        Case("provision esp32-0100 --board esp32 --registry {d}/registry.json --out {d}/devices --place Domplatz",
             says=("--place 'Domplatz' needs --location",)),
    ],
    ("gateway", "run"): config_cases("gateway run", "gateway.toml") + [
        Case(GW.format(c="run", d="{d}"), append("gateway.toml", '[metrics]\nport = "9108x"\n'),
             says=("9108x",)),
        Case(GW.format(c="run", d="{d}"), append("gateway.toml", "[metrics]\nport = {busy}\n"),
             says=("[metrics] port {busy}", "in use")),
        Case(GW.format(c="run", d="{d}"), write("data/gateway.db", GARBAGE_DB), says=("gateway.db", "not a database")),
        Case(GW.format(c="run", d="{d}"), write("registry.json", NOT_JSON), says=("registry.json",)),
        Case(GW.format(c="run", d="{d}"), unreadable("gateway.key"), says=("gateway.key", "permission denied"),
             unprivileged=True),
        # the service's store, run as a user it does not belong to
        Case(GW.format(c="run", d="{d}"), owned_by_nobody("data"), says=("gateway.db", "sudo -u govedge"),
             unprivileged=True),
    ],
    # gateway status: 2 is "not running", so an error reading its input is 3
    ("gateway", "status"): config_cases("gateway status", "gateway.toml", status=3) + [
        Case(GW.format(c="status", d="{d}"), write("data/gateway.db", GARBAGE_DB), says=("not a database",), status=3),
        # a technician's own account on the Pi: the service's files are not theirs
        Case(GW.format(c="status", d="{d}"), unreadable("data"), says=("data", "permission denied"), unprivileged=True,
             status=3),
    ],
    ("gateway", "replay-quarantine"): config_cases("gateway replay-quarantine", "gateway.toml") + [
        Case(GW.format(c="replay-quarantine", d="{d}"), write("data/gateway.db", GARBAGE_DB),
             says=("gateway.db", "not a database")),
    ],
    ("gateway", "web"): config_cases("gateway web", "gateway.toml") + [
        Case(GW.format(c="web", d="{d}") + " --host 127.0.0.1 --port {busy}",
             says=("port {busy} on 127.0.0.1 is in use",)),
        Case(GW.format(c="web", d="{d}"), append("gateway.toml", "[web]\nhost = \"192.0.2.1\"\n"),
             says=("192.0.2.1 is not an address of this machine",)),
    ],
    ("gateway", "install"): [
        Case("gateway install --root {d}/root --gateway-id gw-err-02 --hub-host 127.0.0.1 --no-self-test "
             "--no-start --registry {d}/missing.json", says=("missing.json",)),
        Case("gateway install --root {d}/root --gateway-id gw-err-02 --hub-host 127.0.0.1 --no-self-test "
             "--no-start --registry {d}/registry.json", write("registry.json", NOT_JSON), says=("registry.json",)),
        Case("gateway install --root {d}/root --gateway-id gw-err-02 --hub-host 127.0.0.1 --no-self-test "
             "--no-start --registry {d}/registry.json --hub-ca {d}/missing-ca.pem", says=("missing-ca.pem",)),
        Case("gateway install --root {d}/gateway.key --gateway-id gw-err-02 --hub-host 127.0.0.1 --no-self-test "
             "--no-start", says=("gateway.key",)),  # the root is a file
    ],
    ("gateway", "proof"): config_cases("gateway proof", "gateway.toml", " esp32-0001 0") + [
        Case(GW.format(c="proof", d="{d}") + " esp32-0001 0", write("data/gateway.db", GARBAGE_DB),
             says=("gateway.db", "not a database")),
    ],
    ("gateway", "check"): config_cases("gateway check", "gateway.toml") + [
        Case(GW.format(c="check", d="{d}"), append("gateway.toml", "[batch]\nintervall_s = 5\n"),
             says=("intervall_s", "did you mean interval_s")),
    ],
    ("verify",): [
        Case("verify {d}/missing.json --registry {d}/registry.json", says=("missing.json",)),
        Case("verify {d}/data --registry {d}/registry.json", says=("data",)),
        Case("verify {d}/bundle.json --registry {d}/registry.json", write("bundle.json", "{not json"),
             says=("bundle.json", "JSON")),
        Case("verify {d}/bundle.json --registry {d}/registry.json", write("bundle.json", b"\xff\xfe\x00binary"),
             says=("bundle.json",)),
        Case("verify {d}/bundle.json --registry {d}/registry.json",
             both(write("bundle.json", "{}"), unreadable("bundle.json")), says=("bundle.json", "permission denied"),
             unprivileged=True),
        Case("verify {d}/bundle.json --registry {d}/registry.json",
             both(write("bundle.json", "{}"), write("registry.json", NOT_JSON)), says=("registry.json",)),
        Case("verify {d}/bundle.json --registry {d}/missing.json", write("bundle.json", "{}"),
             says=("missing.json",)),
        Case("verify {d}/bundle.json --registry {d}/registry.json --observer https://127.0.0.1:1 "
             "--ca {d}/missing-ca.pem", write("bundle.json", "{}"), says=("missing-ca.pem",)),
        Case("verify {d}/bundle.json --registry {d}/registry.json --observer http://127.0.0.1:1 "
             "--gateway-key {d}/missing.pem", write("bundle.json", "{}"), says=("missing.pem",)),
    ],
    ("revoke",): [
        Case("revoke esp32-0001 --registry {d}/missing.json", says=("missing.json",)),
        Case("revoke esp32-0001 --registry {d}/data", says=("data",)),
        Case("revoke esp32-0001 --registry {d}/registry.json", write("registry.json", NOT_JSON),
             says=("registry.json",)),
        Case("revoke esp32-0001 --registry {d}/registry.json", unreadable("registry.json"),
             says=("registry.json", "permission denied"), unprivileged=True),
        Case("revoke esp32-0001 --registry {d}/registry.json --since yesterday", says=("yesterday",)),
    ],
    ("locate",): [
        Case("locate esp32-0001 51.96,7.62 --registry {d}/missing.json", says=("missing.json",)),
        Case("locate esp32-0001 51.96,7.62 --registry {d}/data", says=("data",)),
        Case("locate esp32-0001 51.96,7.62 --registry {d}/registry.json", write("registry.json", NOT_JSON),
             says=("registry.json",)),
        Case("locate esp32-0001 51.96,7.62 --registry {d}/registry.json", unreadable("registry.json"),
             says=("registry.json", "permission denied"), unprivileged=True),
        Case("locate esp32-0001 51.96,7.62 --registry {d}/registry.json", write(
            "registry.json", '{"format": "govedge-registry/1", "devices": {"esp32-0001": {"board": "rpi", "keys": '
                             '[{"public_key": "04' + "11" * 64 + '", "status": "active", "created": '
                             '"2026-01-01T00:00:00Z"}], "locations": [{"latitude": 95, "longitude": 7.6, '
                             '"since": "2026-01-01T00:00:00Z"}]}}}'),
             says=("registry.json", "esp32-0001", "location 1", "latitude 95")),
        Case("locate esp32-0001 95,7.62 --registry {d}/registry.json", says=("LAT,LON[,HEIGHT] 95,7.62", "latitude")),
        Case("locate esp32-0001 51.96 --registry {d}/registry.json", says=("LAT,LON[,HEIGHT] 51.96",)),
        Case("locate esp32-0001 51.96,7.62 --place  --registry {d}/registry.json", says=("--place",)),
        Case("locate esp32-0099 51.96,7.62 --registry {d}/registry.json", says=("esp32-0099",)),
        Case("locate esp32-0001 --registry {d}/registry.json", says=("LAT,LON[,HEIGHT]",)),
    ],
    ("hub", "run"): config_cases("hub run", "hub.toml") + [
        Case(HUB.format(c="run", d="{d}"), write("hub.db", GARBAGE_DB), says=("hub.db", "not a database")),
        Case(HUB.format(c="run", d="{d}"), write("gateways.json", NOT_JSON), says=("gateways.json",)),
    ],
    ("hub", "check"): config_cases("hub check", "hub.toml") + [
        Case(HUB.format(c="check", d="{d}"), append("hub.toml", "[metrics]\nport = \"9108x\"\n"),
             says=("[metrics] port", "9108x")),
    ],
    ("hub", "status"): config_cases("hub status", "hub.toml") + [
        Case(HUB.format(c="status", d="{d}"), write("hub.db", GARBAGE_DB), says=("hub.db", "not a database")),
    ],
    ("hub", "web"): config_cases("hub web", "hub.toml") + [
        Case(HUB.format(c="web", d="{d}"), append("hub.toml", "[web]\nport = {busy}\n"),
             says=("port {busy} on 127.0.0.1 is in use",)),
    ],
    ("hub", "install"): [
        Case("hub install --root {d}/root --no-self-test --no-start --registry {d}/missing.json",
             says=("missing.json",)),
        Case("hub install --root {d}/root --no-self-test --no-start --registry {d}/registry.json",
             write("registry.json", NOT_JSON), says=("registry.json",)),
        Case("hub install --root {d}/gateway.key --no-self-test --no-start", says=("gateway.key",)),  # a file
    ],
    ("hub", "add-gateway"): config_cases("hub add-gateway", "hub.toml", " gw-err-03 {d}/gateway.pub.pem") + [
        Case(HUB.format(c="add-gateway", d="{d}") + " gw-err-03 {d}/missing.pem", says=("missing.pem",)),
        Case(HUB.format(c="add-gateway", d="{d}") + " gw-err-03 {d}/data", says=("data",)),
        Case(HUB.format(c="add-gateway", d="{d}") + " gw-err-03 {d}/registry.json", says=("registry.json", "PEM")),
        Case(HUB.format(c="add-gateway", d="{d}") + " gw-err-03 {d}/gateway.pub.pem",
             write("gateways.json", NOT_JSON), says=("gateways.json",)),
    ],
    ("hub", "revoke-gateway"): config_cases("hub revoke-gateway", "hub.toml", " gw-err-01") + [
        Case(HUB.format(c="revoke-gateway", d="{d}") + " gw-err-01", write("gateways.json", NOT_JSON),
             says=("gateways.json",)),
    ],
    ("hub", "proof"): config_cases("hub proof", "hub.toml", " esp32-0001 0") + [
        Case(HUB.format(c="proof", d="{d}") + " esp32-0001 0", write("hub.db", GARBAGE_DB),
             says=("hub.db", "not a database")),
    ],
    ("hub", "keygen"): config_cases("hub keygen", "hub.toml") + [
        Case(HUB.format(c="keygen", d="{d}"), write("hub-key.pem", "not a key"),
             says=("hub-key.pem", "not a PEM private key")),
    ],
    ("hub", "report"): config_cases("hub report", "hub.toml", " --station esp32-0001 --year 2026") + [
        Case(REPORT + " --year 2026", says=("hub-key.pem", "govedge hub keygen")),
        Case(REPORT + " --from 2026-02-30 --to 2026-03-01", hub_key, says=("--from '2026-02-30' is not a date",)),
        Case(REPORT + " --from 2026-03-02 --to 2026-03-01", hub_key, says=("--to 2026-03-01 is before --from",)),
        Case(REPORT, hub_key, says=("give the period",)),
        Case(REPORT + " --year 2026 --interval 7", hub_key, says=("interval 7 s",)),
        Case("hub report --config {d}/hub.toml --station esp32-9999 --year 2026", hub_key,
             says=("station 'esp32-9999' is not a device of the registry",)),
        Case(REPORT + " --year 2026", both(hub_key, write("hub.db", GARBAGE_DB)), says=("hub.db", "not a database")),
        Case(REPORT + " --year 2026", both(hub_key, write("registry.json", NOT_JSON)), says=("registry.json",)),
    ],
    ("hub", "anchor-report"): config_cases("hub anchor-report", "hub.toml", " {d}/report.cbor") + [
        Case(HUB.format(c="anchor-report", d="{d}") + " {d}/report.cbor", a_report,
             says=('[anchor] backend = "none"',)),
        Case(HUB.format(c="anchor-report", d="{d}") + " {d}/missing.cbor",
             append("hub.toml", '[anchor]\nbackend = "rest"\n[anchor.rest]\nurl = "http://127.0.0.1:{busy}"\n'),
             says=("missing.cbor",)),
        Case(HUB.format(c="anchor-report", d="{d}") + " {d}/report.cbor",
             both(write("report.cbor", b"\xa1\x61x\x01"), append(
                 "hub.toml", '[anchor]\nbackend = "rest"\n[anchor.rest]\nurl = "http://127.0.0.1:{busy}"\n')),
             says=("report.cbor", "not a report file")),
    ],
    ("verify-report",): [
        Case(VERIFY_REPORT, says=("report.cbor",)),
        Case("verify-report {d}/data --readings {d}/readings.cbors", says=("data",)),
        Case(VERIFY_REPORT, write("report.cbor", b"\xff\x00 no CBOR"), says=("report.cbor", "not a report file")),
        Case(VERIFY_REPORT, both(a_report, unreadable("report.cbor")), says=("report.cbor", "permission denied"),
             unprivileged=True),
        Case("verify-report {d}/report.cbor --readings {d}/missing.cbors --registry {d}/registry.json", a_report,
             says=("missing.cbors",)),
        Case(VERIFY_REPORT, both(a_report, write("readings.cbors", b"\x9f\x01")),
             says=("readings.cbors", "not a CBOR sequence of signed readings")),
        Case(VERIFY_REPORT, both(a_report, write("registry.json", NOT_JSON)), says=("registry.json",)),
        Case(VERIFY_REPORT + " --hub-key {d}/registry.json", a_report, says=("registry.json", "no PEM")),
    ],
    ("hub", "export"): config_cases("hub export", "hub.toml") + [
        Case(HUB.format(c="export", d="{d}"), write("hub.db", GARBAGE_DB), says=("hub.db", "not a database")),
        Case(HUB.format(c="export", d="{d}") + " --output {d}/data", says=("data", "folder")),
        Case(HUB.format(c="export", d="{d}") + " --output {d}/no/such/folder/out.csv", says=("out.csv",)),
        Case(HUB.format(c="export", d="{d}") + " --since yesterday", says=("yesterday",)),
        # a PostgreSQL store whose server is down (nothing listens on port 1)
        Case(HUB.format(c="export", d="{d}"), write(
            "hub.toml", '[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\n[store]\n'
                        'url = "postgresql://govedge:a-db-secret@127.0.0.1:1/hub"\n'),
             says=("cannot connect to PostgreSQL at postgresql://govedge:",)),
    ],
}


def test_every_command_has_its_bad_inputs():
    found = {words for words, _ in cli.commands(cli.build_parser())}
    assert found == set(CASES) | set(NOT_RUN), (
        f"commands without cases here: {sorted(found - set(CASES) - set(NOT_RUN))}; "
        f"cases of commands that are gone: {sorted(set(CASES) | set(NOT_RUN) - found)}")


@pytest.fixture
def world(tmp_path):
    """A gateway's and a hub's files, each good: a registry with one device, the gateway's key, config and
    store, the hub's config, gateway list and store."""
    from govedge.gateway.store import Store
    from govedge.hub.gateways import Gateways
    from govedge.hub.store import HubStore
    from govedge.tools.field.provision import provision
    from support.deploy import gateway_key

    d = tmp_path / "world"
    d.mkdir()
    provision("esp32-0001", "rpi", ["bme280"], d / "registry.json", d / "devices")
    _, public = gateway_key(d)
    from cryptography.hazmat.primitives import serialization

    (d / "gateway.pub.pem").write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    (d / "gateway.toml").write_text(GATEWAY_TOML)
    Store(d / "data" / "gateway.db").close()
    gateways = Gateways(path=d / "gateways.json")
    gateways.add("gw-err-01", public)
    gateways.save()
    (d / "hub.toml").write_text('[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\nverify_workers = 0\n'
                                '[store]\nurl = "hub.db"\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
                                'client_id = "hub-err"\n')
    HubStore(str(d / "hub.db")).close()
    return d


def run(args: list[str], unprivileged: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("GOVEDGE_DEBUG", "JOURNAL_STREAM", "INVOCATION_ID")}
    prefix = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else []
    if prefix and not shutil.which("setpriv"):
        pytest.fail("setpriv is missing (Debian package util-linux)")
    return subprocess.run([*prefix, sys.executable, "-m", "govedge.tools.cli", *args], capture_output=True,
                          text=True, env={**environ, **(env or {})}, timeout=120)


ALL = [(words, i, case) for words, cases in CASES.items() for i, case in enumerate(cases)]


@pytest.mark.parametrize("words, i, case", ALL, ids=[f"{' '.join(w)}-{i}" for w, i, _ in ALL])
def test_bad_input_ends_in_one_line_without_a_traceback(world, words, i, case):
    with socket.socket() as busy:  # a port another process holds, for the cases that need one
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fill = lambda text: text.replace("{d}", str(world)).replace("{busy}", str(port))  # noqa: E731
        case.spoil(world)
        for path in world.rglob("*"):  # what the case wrote, in the world's terms (its busy port)
            if path.is_file() and os.access(path, os.R_OK) and path.suffix in (".toml",):
                path.write_text(fill(path.read_text()))
        out = run(fill(case.args).split(), case.unprivileged)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == case.status, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"govedge {' '.join(words)}: "), lines[0]
    for text in case.says:
        assert fill(text).lower() in lines[0].lower(), lines[0]
    assert "a-db-secret" not in out.stderr


def test_a_reader_that_goes_away_ends_the_export_quietly(tmp_path):
    # `govedge hub export | head -1`: the pipe closes while the export writes
    from govedge.core import batch
    from govedge.hub.store import HubStore
    from support.hubkit import World

    hub = World(tmp_path / "hub")
    store = HubStore(hub.store_url)
    with store.transaction():
        for cose in hub.batches(3, per_batch=4):
            store.add_batch(batch.verify(cose, hub.gateway_keys))
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "hub", "export", "--config",
                             str(hub.hub_toml(port=1))], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141, err
    assert err == "", err  # no traceback, no "Exception ignored ... BrokenPipeError" at the last flush


def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    import select
    import signal

    from govedge.anchor import Receipt
    from govedge.core import batch, proof
    from govedge.core.epoch import Epoch, head_of
    from support.hubkit import GATEWAY, World

    hub = World(tmp_path / "hub")
    signed = batch.verify(hub.batches(1, per_batch=2)[0], hub.gateway_keys)
    epoch = Epoch(GATEWAY, 0, (head_of(signed),))
    receipt = Receipt("rest", "govchain-test", epoch.root, "ab" * 32, block=5, block_time=1_764_400_900)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(proof.dumps(proof.build(signed.messages[0], signed.leaves, head_of(signed), epoch, receipt)))
    with socket.socket() as silent:  # an observer that takes the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        proc = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "verify", str(bundle), "--registry",
                                 str(hub.folder / "registry.json"), "--observer",
                                 f"http://127.0.0.1:{silent.getsockname()[1]}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert select.select([silent], [], [], 120)[0], "verify never asked the observer"
        proc.send_signal(signal.SIGINT)  # while it waits for the answer
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err == "", err


def test_govedge_debug_shows_the_traceback(world):
    out = run(["revoke", "esp32-0001", "--registry", str(world / "missing.json")], env={"GOVEDGE_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "RegistryError" in out.stderr


def test_version_is_the_installed_package_version():
    from importlib import metadata

    for args in (["--version"], ["gateway", "run", "--version"], ["verify", "--version"]):
        out = run(args)
        assert (out.returncode, out.stdout) == (0, f"govedge {metadata.version('govchain-edge')}\n"), out.stderr
