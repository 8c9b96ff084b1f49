"""A private PostgreSQL server for the tests and `govedge bench hub --store postgresql`.

Debian's `postgresql` package (make test installs it): a cluster of its own in a
temporary folder, on a free loopback port, trust authentication for the user
`govedge`, gone again after `stop()`. As root, the server runs as the `postgres`
user the package created (PostgreSQL refuses to run as root).

The tests run it with fsync off (they prove behaviour, not durability, and would
wait on the disk for nothing); the benchmark runs it with fsync on, as a hub's
database server runs, since a commit that waits for the disk is what it measures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from govedge.core.errors import GovedgeError
from govedge.tools.dev.broker import free_port

BIN_ROOT = Path("/usr/lib/postgresql")  # Debian's layout: /usr/lib/postgresql/<major>/bin


class PostgresError(GovedgeError, RuntimeError):
    code = "postgres"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(BIN_ROOT.glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PostgresServer:
    """start() / stop() a cluster of its own; ``fsync``: the server's fsync setting."""

    def __init__(self, fsync: bool = True):
        self.bin = bin_dir()
        if self.bin is None:
            raise PostgresError(f"PostgreSQL is not installed (no {BIN_ROOT}/*/bin/pg_ctl: Debian package "
                                "'postgresql'; make test installs it)")
        self.fsync = fsync
        self.folder = Path(tempfile.mkdtemp(prefix="govedge-pg-"))
        self.data = self.folder / "data"  # the cluster's data directory
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            raise PostgresError(f"{' '.join(command)} failed: {proc.stdout[-1000:]} {proc.stderr[-1000:]}")

    def start(self) -> "PostgresServer":
        fsync = "on" if self.fsync else "off"
        try:
            # --no-sync: initdb's own files need no fsync, the cluster is thrown away after the run
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "govedge", "--no-sync", "-E", "UTF8")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "30",
                      "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync={fsync}",
                      "start")
        except PostgresError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        return self

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://govedge@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def pid(self) -> int:
        """The postmaster's process id (its backends, the checkpointer and the WAL writer are its children)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        """Stops the server at once (nothing in it is kept) and removes its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
