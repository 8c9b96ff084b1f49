"""What `govedge gateway check` and `govedge hub check` share: a check's result, its line, and the checks
of files and connections both services have (TLS files, a writable folder, a TCP port, a broker login).

A check is (name, passed, what was found): passed True, False, or None for "not checked here" (no
anchoring configured). Every failure says what to do, in the words of the file it names (`[hub] ca`)."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .config import MqttEndpoint
from .registry import Registry

Result = tuple[str, "bool | None", str]

MARKS = {True: "ok", False: "FAIL", None: "--"}


def line(result: Result) -> str:
    """One check as `govedge ... check` prints it: ``ok    name            what was found``."""
    name, passed, text = result
    return f"{MARKS[passed]:<5} {name:<15} {text}"


INVALID = 2  # the exit status of a configuration that is not valid


def report(role: str, configured: tuple, plan: Callable, out: Callable[[str], None] = print) -> int:
    """`govedge gateway check`, `govedge hub check`: ``configured`` is (config or None, its check); then each
    check ``plan(config)`` lists (callables returning a Result) done and printed in turn. Returns the exit
    status: INVALID (its one line on standard error, as every command says it cannot use its
    configuration), else exit_code's."""
    cfg, result = configured
    if cfg is None:
        print(f"govedge {role} check: {result[2]}", file=sys.stderr)
        return INVALID
    out(line(result))
    results = []
    for one in plan(cfg):
        results.append(one())
        out(line(results[-1]))
    return exit_code(results)


def registry(path: Path) -> Result:
    """The device registry loads (gateway check, hub check and the installs' self-tests word it the same)."""
    try:
        reg = Registry.load(path)
    except Exception as exc:  # noqa: BLE001 - the checklist names any fault of the file
        return ("registry", False, str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    return ("registry", True, f"{len(reg.devices)} devices in {path}")


def exit_code(results: list[Result]) -> int:
    """0: every check passed (or was not needed), 1: one failed."""
    return 1 if any(passed is False for _, passed, _ in results) else 0


def readable(name: str, path: Path | str, where: str) -> Result:
    """A file the service reads: there, a file, and readable by whoever runs the check."""
    path = Path(path)
    if not path.exists():
        return (name, False, f"{path} not found: fix {where} or put the file there")
    if not path.is_file():
        return (name, False, f"{path} is not a file: fix {where}")
    if not os.access(path, os.R_OK):
        return (name, False, f"{path} is not readable by this user: check its owner and mode")
    return (name, True, f"{path} readable")


def tls_files(name: str, ep: MqttEndpoint, section: str) -> Result:
    """The CA, client certificate and key of a broker connection: there, PEM, and the key the certificate's."""
    if not ep.tls:
        return (name, None, f"{section} tls = false: no TLS files needed")
    for key in ("ca", "cert", "key"):
        path = getattr(ep, key)
        if path is not None and (found := readable(name, path, f"{section} {key}"))[1] is False:
            return found
    context = ssl.create_default_context()
    try:
        if ep.ca:
            context.load_verify_locations(cafile=ep.ca)
        if ep.cert:
            context.load_cert_chain(ep.cert, ep.key)
    except ssl.SSLError as exc:
        what = f"{section} ca {ep.ca}" if not ep.cert else f"{section} cert {ep.cert} / key {ep.key}"
        return (name, False, f"{what}: not usable PEM ({exc.reason or exc}); give the PEM files the broker's CA "
                             "issued")
    found = [f"{key} {getattr(ep, key)}" for key in ("ca", "cert", "key") if getattr(ep, key)]
    return (name, True, ", ".join(found) if found else "the system's CAs")


def writable(name: str, folder: Path, where: str) -> Result:
    """A folder the service writes to: a file can be made there (or the folder made, when it is missing)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return (name, False, f"{existing} is not a folder: fix {where}")
    if existing != folder:
        if os.access(existing, os.W_OK | os.X_OK):
            return (name, True, f"{folder} will be made when the service starts")
        return (name, False, f"{folder} does not exist and cannot be made here ({existing} is not writable): "
                             f"make it for the service's user, or fix {where}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return (name, False, f"{folder} is not writable by this user ({exc.strerror}): check its owner and mode")
    return (name, True, f"{folder} writable")


def tcp(name: str, host: str, port: int, where: str, timeout: float = 5.0) -> Result:
    """A TCP connection to ``host:port``; the failure names the key that says where."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return (name, True, f"{host}:{port} reachable")
    except OSError as exc:
        return (name, False, f"{host}:{port} unreachable: {exc}; check {where} host and port, the network, "
                             "and that the broker runs")


def broker_login(name: str, ep: MqttEndpoint, client_id: str, where: str, clean_session: bool = True,
                 timeout: float = 5.0) -> Result:
    """An MQTT connection with the endpoint's login and TLS, under ``client_id`` (never the service's own
    session unless asked); nothing is subscribed or acknowledged. The failure says what the broker said."""
    from .mqtt import client

    probe = client(MqttEndpoint(**{**vars(ep), "client_id": client_id}), clean_session, manual_ack=True)
    result: dict = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, reason, properties):
        result["reason"] = reason
        done.set()

    probe.on_connect = on_connect
    try:
        probe.connect(ep.host, ep.port, max(ep.keepalive, 5))
    except (OSError, ssl.SSLError, ValueError) as exc:
        hint = "the broker's certificate and ca" if isinstance(exc, ssl.SSLError) else "host and port, the network"
        return (name, False, f"{ep.host}:{ep.port} unreachable: {exc}; check {where} {hint}, and that the "
                             "broker runs")
    probe.loop_start()
    done.wait(timeout)
    probe.disconnect()
    probe.loop_stop()
    reason = result.get("reason")
    who = f" as {ep.user!r}" if ep.user else ""
    if reason is None:
        return (name, False, f"{ep.host}:{ep.port} did not answer an MQTT connect within {timeout:g} s; is it "
                             f"an MQTT broker ({where} port)?")
    if reason.is_failure:
        return (name, False, f"{ep.host}:{ep.port} refused the login{who}: {reason}; check {where} user and "
                             "password (and the broker's password file)")
    return (name, True, f"{'TLS ' if ep.tls else ''}MQTT login to {ep.host}:{ep.port}{who} accepted")

