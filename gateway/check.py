"""`govedge gateway check --config gateway.toml`: is this gateway ready to run? Like `telegraf --test`,
it starts nothing: it reads the configuration, then the files it names (the gateway's key, the
registry, the data folder, the TLS files), then tries each connection with a short timeout (the local
broker, the hub's broker, the chain if epochs are anchored). One line per check, ``ok`` or ``FAIL``
with what to do; the exit status is 0 when all passed, 1 when one failed, 2 when the configuration
itself is not valid (nothing else is checked then).

The checks of a connection are shared with `govedge gateway install`'s self-test (govedge.gateway.install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from govedge.anchor import NONE as NO_ANCHORING
from govedge.core import check
from govedge.core.check import Result
from govedge.core.config import ConfigError

from . import config as gwconfig


def configuration(path: Path) -> tuple[gwconfig.GatewayConfig | None, Result]:
    """The configuration, parsed and its [filter] and [aggregate] sections checked by their stages."""
    from .aggregate import Aggregator
    from .filter import Filter

    try:
        cfg = gwconfig.load(path)
        Filter(cfg.filter)
        Aggregator.from_config(cfg.aggregate)
    except ConfigError as exc:
        return None, ("configuration", False, str(exc))
    return cfg, ("configuration", True, f"{path} is valid")


def signing_key(cfg: gwconfig.GatewayConfig) -> Result:
    found = check.readable("gateway key", cfg.key_file, "[gateway] key_file")
    if found[1] is False:
        return found
    try:
        cfg.signing_key()
    except ConfigError as exc:
        return ("gateway key", False, f"{exc}: give the key `govedge gateway install` made (gateway.key)")
    return ("gateway key", True, f"{cfg.key_file}: a P-256 private key")


def local_broker(cfg: gwconfig.GatewayConfig, wait_s: float = 20.0, timeout: float = 10.0) -> Result:
    """The gateway's login on its broker. The broker binds a login to its session (client id = user
    name), so while the service runs, connecting as the gateway would take its session over: the
    running service's own word (live.json) is asked instead. Otherwise the login is tried with the
    gateway's session kept (clean_session False, nothing acknowledged: what the broker hands over comes
    again when the gateway reconnects, no subscription)."""
    from .health import live

    deadline = time.monotonic() + wait_s
    state = live(cfg.data_dir)
    while state and state.get("running"):
        ingest = state.get("parts", {}).get("ingest") or {}
        if ingest.get("ok"):
            return ("local broker", True, f"the running gateway (process {state['pid']}): {ingest['state']}")
        if time.monotonic() > deadline:
            return ("local broker", False, f"the running gateway (process {state['pid']}): "
                                           f"{ingest.get('state', 'not connected to the local broker')}")
        time.sleep(0.5)
        state = live(cfg.data_dir)
    return check.broker_login("local broker", cfg.ingest, f"govedge-install-check-{os.getpid()}", "[ingest.mqtt]",
                              clean_session=False, timeout=timeout)


def hub_broker(cfg: gwconfig.GatewayConfig, name: str = "hub broker", timeout: float = 5.0) -> Result:
    """The hub's broker answers (TCP; the gateway's login there is its uplink's, tried by the service)."""
    return check.tcp(name, cfg.hub.host, cfg.hub.port, "[hub]", timeout)


def chain(cfg: gwconfig.GatewayConfig) -> Result:
    """The chain answers a lookup of a root (any root: an answer proves the chain answers)."""
    from govedge.anchor import AnchorError

    from .anchoring import make_backend

    try:
        backend = make_backend(cfg)
        if backend is None:
            return ("govchain", None, f"no anchoring configured ([anchor] backend = \"{NO_ANCHORING}\")")
        backend.lookup(bytes(31) + b"\x01")
    except (AnchorError, OSError, ValueError) as exc:
        return ("govchain", False, f"{cfg.anchor_backend}: {exc}; check [anchor.{cfg.anchor_backend}]")
    return ("govchain", True, f"{cfg.anchor_backend} chain answers")


def disk_space(cfg: gwconfig.GatewayConfig) -> Result:
    """Room for the store's quota (or a gigabyte) on the file system of the data folder (or of the
    folder it will be made in)."""
    folder = cfg.data_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    ok = usage.free > 2 * min(cfg.store_max_bytes, 2e9) or usage.free > 1e9
    return ("disk space", ok, f"{usage.free / 1e9:.1f} GB free at {folder} (store quota "
                              f"{cfg.store_max_bytes / 1e9:g} GB)" + ("" if ok else "; make room, or lower [store] "
                                                                               "max_bytes"))


def clock_synchronised() -> tuple[bool | None, str]:
    """NTP synchronisation as systemd sees it; readings get the gateway's time checks from it."""
    tool = shutil.which("timedatectl")
    if tool:
        proc = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
            ok = proc.stdout.strip() == "yes"
            return ok, "synchronised (NTP)" if ok else "NOT synchronised: check NTP (timedatectl timesync-status)"
    return None, (f"cannot tell here (no timedatectl); the clock reads "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: compare it with a phone")


def files(cfg: gwconfig.GatewayConfig) -> list[Result]:
    """The offline checks: everything the configuration names that the service reads or writes, the
    room on the disk and the clock."""
    results = [signing_key(cfg), check.registry(cfg.registry), check.writable("data folder", cfg.data_dir,
                                                                         "[gateway] data_dir"), disk_space(cfg),
               ("clock", *clock_synchronised()),
               check.tls_files("local TLS", cfg.ingest, "[ingest.mqtt]"),
               check.tls_files("hub TLS", cfg.hub, "[hub]")]
    for key, value in sorted(cfg.anchor.items()):
        setting = next((s for s in _settings(cfg.anchor_backend) if s.key == key), None)
        if setting is not None and setting.type == "file":
            results.append(check.readable("anchor files", value, f"[anchor.{cfg.anchor_backend}] {key}"))
    return results


def _settings(backend: str):
    from govedge import anchor

    return anchor.lookup(backend).settings if backend != NO_ANCHORING else ()


def connections(cfg: gwconfig.GatewayConfig) -> list[Callable[[], Result]]:
    """The online checks, each with a short timeout (to be called one after the other)."""
    return [lambda: local_broker(cfg, wait_s=5.0, timeout=5.0), lambda: hub_broker(cfg), lambda: chain(cfg)]


def run(path: Path, out: Callable[[str], None] = print) -> int:
    """Every check, each printed as it is done; returns the exit status."""
    return check.report("gateway", configuration(Path(path)),
                        lambda cfg: [*(lambda r=r: r for r in files(cfg)), *connections(cfg)], out)
