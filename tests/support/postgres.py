"""A private PostgreSQL server for the tests: govedge.tools.dev.postgres (the benchmark's too), with fsync off.

The tests prove behaviour, not durability: a server that does not wait for the disk runs them faster and
changes nothing they look at.
"""

from __future__ import annotations

from govedge.tools.dev import postgres


class PostgresServer(postgres.PostgresServer):
    def __init__(self):
        super().__init__(fsync=False)
