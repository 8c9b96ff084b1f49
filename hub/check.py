"""`govedge hub check --config hub.toml`: is this hub worker ready to run? It starts nothing: it reads
the configuration, then the files it names (the device registry, the gateway list, the state folder,
the TLS files), then tries the store (SQLite file or PostgreSQL, never creating or changing a table)
and the broker (a login of its own, so that the worker's session is left alone), each with a short
timeout. One line per check, ``ok`` or ``FAIL`` with what to do; the exit status is 0 when all
passed, 1 when one failed, 2 when the configuration itself is not valid."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable

from govedge.core import check, redact
from govedge.core.check import Result
from govedge.core.config import ConfigError

from . import config as hubconfig
from .gateways import Gateways

TIMEOUT_S = 5


def configuration(path: Path) -> tuple[hubconfig.HubConfig | None, Result]:
    try:
        cfg = hubconfig.load(path)
    except ConfigError as exc:
        return None, ("configuration", False, str(exc))
    return cfg, ("configuration", True, f"{path} is valid")


def gateways(path: Path) -> Result:
    try:
        known = Gateways.load(path)
    except Exception as exc:  # noqa: BLE001
        return ("gateways", False, f"{exc}")
    return ("gateways", True, f"{len(known.doc['gateways'])} gateways in {path}")


def store(url: str, timeout: int = TIMEOUT_S) -> Result:
    """The store opens, read-only: an SQLite file that exists is asked for its tables (one that does not
    is made at the first start, where its folder is writable); PostgreSQL is logged in to."""
    if url.startswith(("postgresql://", "postgres://")):
        shown = redact.dsn(url)
        try:
            import psycopg
        except ImportError:
            return ("store", False, "a PostgreSQL store needs psycopg: pip install 'govchain-edge[hub]'")
        try:
            with psycopg.connect(url, connect_timeout=timeout) as db:
                db.execute("SELECT 1")
        except psycopg.Error as exc:
            return ("store", False, f"cannot connect to PostgreSQL at {shown}: "
                                    f"{redact.text(exc, url, paths=False)}; check [store] url, the role's password "
                                    "(~/.pgpass or PGPASSWORD) and that the server runs")
        return ("store", True, f"PostgreSQL at {shown} answers")
    path = Path(url.removeprefix("sqlite://"))
    if not path.exists():
        found = check.writable("store", path.parent, "[store] url")
        return found if found[1] is False else ("store", True, f"{path} is made at the first start "
                                                                f"({path.parent} writable)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        return ("store", False, f"{path}: {exc}; is it the hub's SQLite store ([store] url)?")
    if not os.access(path, os.W_OK):
        return ("store", False, f"{path} is not writable by this user: check its owner and mode")
    return ("store", True, f"{path}: SQLite, {tables} tables")


def broker(cfg: hubconfig.HubConfig, timeout: float = TIMEOUT_S) -> Result:
    return check.broker_login("broker", cfg.mqtt, f"{cfg.mqtt.client_id}-check", "[mqtt]", timeout=timeout)


def report_key(cfg: hubconfig.HubConfig) -> Result:
    """The key that signs reports: a worker runs without it, `govedge hub report` needs it."""
    from govedge.core.report import hub_key_id

    if not cfg.key.exists():
        return ("report key", None, f"{cfg.key} not made yet: reports need it (govedge hub keygen --config ...); "
                                    "the workers do not")
    try:
        key = cfg.signing_key()
    except PermissionError:
        return ("report key", None, f"{cfg.key} is not readable by this user (reports are made by its owner)")
    except ConfigError as exc:
        return ("report key", False, f"{exc}")
    return ("report key", True, f"{cfg.key}: hub key {hub_key_id(key.public_key())}")


def files(cfg: hubconfig.HubConfig) -> list[Result]:
    return [check.registry(cfg.registry), gateways(cfg.gateways),
            check.writable("state folder", cfg.state_dir, "[hub] state_dir"),
            check.tls_files("broker TLS", cfg.mqtt, "[mqtt]"), report_key(cfg)]


def run(path: Path, out: Callable[[str], None] = print) -> int:
    """Every check, each printed as it is done; returns the exit status."""
    return check.report("hub", configuration(Path(path)),
                        lambda cfg: [*(lambda r=r: r for r in files(cfg)), lambda: store(cfg.store),
                                     lambda: broker(cfg)], out)
