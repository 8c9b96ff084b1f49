"""govedge.tools.dev.postgres: the private PostgreSQL server of the benchmark (fsync on) and of the tests (off)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from govedge.tools.dev.postgres import PostgresServer
from support import postgres as test_server

pytestmark = pytest.mark.postgres  # starts PostgreSQL servers of its own


def setting(url: str, name: str) -> str:
    with psycopg.connect(url) as db:
        return db.execute(f"SHOW {name}").fetchone()[0]


def running(pid: int) -> bool:
    """Whether a process runs: it exists and is no zombie (a container's first process may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_bench_server_waits_for_the_disk_and_the_tests_server_does_not():
    with PostgresServer(fsync=True) as bench:
        assert setting(bench.new_database(), "fsync") == "on"
        assert setting(bench.url(), "synchronous_commit") == "on"
    tests = test_server.PostgresServer().start()
    try:
        assert setting(tests.new_database(), "fsync") == "off"
    finally:
        tests.stop()


def test_a_stopped_server_leaves_no_process_and_no_folder():
    server = PostgresServer().start()
    pid, folder, url = server.pid(), server.folder, server.url()
    assert (server.data / "PG_VERSION").exists()
    server.stop()
    assert not folder.exists()
    assert not running(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
