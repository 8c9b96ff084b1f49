"""The hub's store: SQLite by default, PostgreSQL when configured; the same tables in both.

    batches       one row per gateway batch (id = gateway id + store id + sequence number), its signed bytes
    readings      one row per device message (device id + sequence number), its signed bytes
    measurements  the values of each reading, exactly as signed (value_text) and as a number
    aggregates    the gateway's window aggregates, per batch
    epochs        the gateways' anchored epochs: batch heads, root, anchor receipt
    rejected      batches, epoch records, status records and device messages the hub refused: the code,
                  the reason, and a bounded prefix of the bytes as received with their SHA-256 and size
    gateway_status  one row per gateway: when the hub last had a batch of it, and its latest signed
                  status record (heartbeat, govedge.core.heartbeat) with its nodes' last seen times

A batch is stored with its readings and aggregates in one transaction; a batch id
seen before with the same bytes is a duplicate (a redelivery, or two hub
workers that both got it) and changes nothing. A device message the hub
refuses leaves its batch stored without it: the batch's ``refused`` column
lists the leaves. Sequence numbers are stored as 64-bit signed integers: a
node's counter would need centuries to pass 2**63.

Columns added after the first release are in ADDED_COLUMNS: a store made by
an earlier version gets them when it is opened (``ALTER TABLE ... ADD
COLUMN``), so that old and new stores have the same tables. Tables added
after it are in ADDED_TABLES, made when a store without them is opened.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import cbor2

from govedge.core import redact, wire
from govedge.core.batch import Batch, batch_id
from govedge.core import errors
from govedge.core.errors import INTERNAL_ERROR, GovedgeError, Refusal, one_line, text_of

from . import partitions

TYPES = {
    "sqlite": {"INT": "INTEGER", "REAL": "REAL", "BLOB": "BLOB", "SERIAL": "INTEGER PRIMARY KEY"},
    "postgresql": {"INT": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA",
                   "SERIAL": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    gateway_id TEXT NOT NULL,
    seq {INT} NOT NULL,
    created {INT} NOT NULL,             -- the gateway's clock when it signed the batch
    received_at {REAL} NOT NULL,
    mode TEXT NOT NULL,                 -- 'raw' (device messages inside) or 'aggregate' (their hashes)
    size {INT} NOT NULL,
    root {BLOB} NOT NULL,               -- RFC 9162 Merkle root over the device messages
    cose {BLOB} NOT NULL,               -- the gateway-signed bytes, as received
    PRIMARY KEY (gateway_id, seq)       -- and refused: ADDED_COLUMNS
);
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    seq {INT} NOT NULL,
    time {REAL},                        -- the node's clock; NULL when it was not set
    gateway_id TEXT NOT NULL,
    batch_seq {INT} NOT NULL,
    leaf {INT} NOT NULL,                -- position in the batch's Merkle tree
    message {BLOB} NOT NULL,            -- the device-signed bytes
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE IF NOT EXISTS measurements (
    device_id TEXT NOT NULL,
    seq {INT} NOT NULL,
    name TEXT NOT NULL,
    pos {INT} NOT NULL,                 -- its place in the reading's SenML pack
    unit TEXT,
    value {REAL},                       -- numbers only
    value_text TEXT NOT NULL,           -- exactly as signed: 21.41, 100800, true, a string
    PRIMARY KEY (device_id, seq, name)
);
CREATE TABLE IF NOT EXISTS aggregates (
    gateway_id TEXT NOT NULL,
    batch_seq {INT} NOT NULL,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    unit TEXT,
    window_start {INT} NOT NULL,
    window_end {INT} NOT NULL,
    count {INT} NOT NULL,
    min {REAL} NOT NULL,
    max {REAL} NOT NULL,
    mean {REAL} NOT NULL,
    stdev {REAL} NOT NULL,
    last {REAL} NOT NULL,
    first_seq {INT} NOT NULL,
    last_seq {INT} NOT NULL,
    PRIMARY KEY (gateway_id, batch_seq, device_id, name, window_start)
);
CREATE TABLE IF NOT EXISTS epochs (
    gateway_id TEXT NOT NULL,
    number {INT} NOT NULL,
    first_batch {INT} NOT NULL,
    last_batch {INT} NOT NULL,
    size {INT} NOT NULL,
    root {BLOB} NOT NULL,               -- the anchored RFC 9162 root over the batch heads
    heads {BLOB} NOT NULL,              -- CBOR array of the batch heads
    receipt TEXT NOT NULL,              -- the anchor receipt (JSON)
    cose {BLOB} NOT NULL,               -- the gateway-signed epoch record
    PRIMARY KEY (gateway_id, number)
);
CREATE TABLE IF NOT EXISTS rejected (
    id {SERIAL},
    received_at {REAL} NOT NULL,
    topic TEXT NOT NULL,
    gateway_id TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload {BLOB} NOT NULL             -- and sha256, size, device_id, seq: ADDED_COLUMNS
);
CREATE TABLE IF NOT EXISTS waiting_for_gateway (  -- unknown_gateway: verified again after a reload
    id {SERIAL},
    received_at {REAL} NOT NULL,
    topic TEXT NOT NULL,
    gateway_id TEXT NOT NULL,           -- the gateway of its topic: whose share of the table it takes
    payload {BLOB} NOT NULL,            -- whole, as received
    sha256 {BLOB} NOT NULL UNIQUE       -- a batch delivered again waits once
);
CREATE TABLE IF NOT EXISTS key_bounds (  -- learnt from the first message the hub stores under a newer key
    signer TEXT NOT NULL,               -- a device id, or 'gw/' and a gateway id
    key_id TEXT NOT NULL,               -- its retired or revoked key (govedge.core.registry.key_id)
    valid_below_seq {INT} NOT NULL,     -- valid only for readings (batches) numbered below this
    PRIMARY KEY (signer, key_id)
);
"""

# a new PostgreSQL store's readings and measurements: partitioned by month on ``at`` (govedge.hub.partitions);
# a store from before is moved into them when it is opened (HubStore._partition). The primary keys hold ``at``
# (PostgreSQL's rule for a partitioned table); a measurement's leads with its datastream (device, name) and time
PARTITIONED_SCHEMA = """
CREATE TABLE readings (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time DOUBLE PRECISION,
    gateway_id TEXT NOT NULL,
    batch_seq BIGINT NOT NULL,
    leaf BIGINT NOT NULL,
    message BYTEA NOT NULL,
    key_id TEXT,
    flag TEXT,
    store_id TEXT NOT NULL DEFAULT '',
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE measurements (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    pos BIGINT NOT NULL,
    unit TEXT,
    value DOUBLE PRECISION,
    value_text TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, name, at, seq)
) PARTITION BY RANGE (at);
"""

# the indexes of a SQLite store beyond its primary keys: a datastream's measurements over a period (device,
# name, at). Every index costs each reading's insert: none on readings' times, which only export's window
# (a pass over the store anyway) asks for
SQLITE_INDEXES = (
    "DROP INDEX IF EXISTS readings_time",  # on the node's time alone, which export's window never used
    "CREATE INDEX IF NOT EXISTS measurements_datastream ON measurements (device_id, name, at)",
)

# tables added after the first release: made in a store that lacks them when it is opened
ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS gateway_status (
    gateway_id TEXT PRIMARY KEY,
    last_batch_at {REAL},               -- when the hub last stored a batch or epoch record of it (or one again)
    received_at {REAL},                 -- when its latest status record came; NULL: none yet (the hub's clock)
    store_id TEXT,                      -- the record's gateway store
    seq {INT},                          -- its number: only a higher one of the same store replaces it
    sent_at {INT},                      -- the gateway's clock when it signed it
    state TEXT,                         -- its backlog, anchoring, store and clock: JSON (Heartbeat.state)
    devices TEXT,                       -- its nodes: JSON, device -> [last seen, last seq, node time, interval]
    cose {BLOB}                         -- the signed record, as received
);
"""

# (table, column, definition, what it holds): added to a store that lacks them when it is opened
ADDED_COLUMNS = (
    ("batches", "refused", "TEXT NOT NULL DEFAULT '[]'",
     "the batch's leaves the hub refused, a JSON array of leaf indexes: [] or [3,17]"),
    ("rejected", "sha256", "{BLOB}", "SHA-256 of the whole payload as received"),
    ("rejected", "size", "{INT}", "the payload's size as received; `payload` keeps a bounded prefix of it"),
    ("rejected", "device_id", "TEXT", "a refused device message's device id, when its header reads"),
    ("rejected", "seq", "{INT}", "and its sequence number, when all of it reads"),
    ("rejected", "batch_seq", "{INT}", "a refused device message's batch (of gateway_id): its sequence number"),
    ("rejected", "leaf", "{INT}", "and the message's leaf index in that batch"),
    ("readings", "key_id", "TEXT", "the device key that verified it (govedge.core.registry.key_id); NULL before"),
    ("readings", "flag", "TEXT", "revoked_key: its key was revoked later and its time is not before "
                                 "revoked_since (or it has none); NULL otherwise"),
    # a gateway's store id (govedge.core.batch): its batches and epochs are numbered per store, from 0 in a new
    # one; '' for a gateway from before store ids. Part of the primary keys of the first three: RE_KEYED
    ("batches", "store_id", "TEXT NOT NULL DEFAULT ''", "the gateway store the batch came from; '' before store ids"),
    ("aggregates", "store_id", "TEXT NOT NULL DEFAULT ''", "the store of the batch (of gateway_id, batch_seq)"),
    ("epochs", "store_id", "TEXT NOT NULL DEFAULT ''", "the gateway store that closed the epoch; '' before store ids"),
    ("readings", "store_id", "TEXT NOT NULL DEFAULT ''", "the store of its batch (of gateway_id, batch_seq)"),
    ("rejected", "store_id", "TEXT", "a refused device message's batch (of gateway_id, batch_seq): its store"),
    ("readings", "at", "{REAL}", "the time it is filed under: the node's time, or when its node's clock was not set, "
                                 "the time its gateway signed the batch (govedge.hub.partitions)"),
    ("measurements", "at", "{REAL}", "its reading's `at`"),
)

# primary keys widened by the store id, (before, after): changed in the transaction that adds the column
RE_KEYED = {
    "batches": ("(gateway_id, seq)", "(gateway_id, store_id, seq)"),
    "aggregates": ("(gateway_id, batch_seq, device_id, name, window_start)",
                   "(gateway_id, store_id, batch_seq, device_id, name, window_start)"),
    "epochs": ("(gateway_id, number)", "(gateway_id, store_id, number)"),
}

READING_COLUMNS = "device_id, seq, time, gateway_id, store_id, batch_seq, leaf, message, key_id, at"
MEASUREMENT_COLUMNS = "device_id, seq, name, pos, unit, value, value_text, at"
# their PostgreSQL types, for COPY in binary
READING_TYPES = ("text", "int8", "float8", "text", "text", "int8", "int8", "bytea", "text", "float8")
MEASUREMENT_TYPES = ("text", "int8", "text", "int8", "text", "float8", "text", "float8")
SYNCHRONOUS = ("FULL", "NORMAL")  # [store] synchronous: SQLite's PRAGMA synchronous in WAL mode
KEEP_BYTES = 262144  # of a rejected payload; a batch of 500 readings (about 100 kB) fits whole
MAX_REASON_CHARS = 500
MAX_TOPIC_CHARS = 256


class StoreError(GovedgeError, RuntimeError):
    code = "store"


DUPLICATE = Refusal("duplicate", "the latest status record again")  # add_heartbeat: nothing changed


class GatewayStatus(NamedTuple):
    """A gateway's row of gateway_status, read."""

    gateway_id: str
    last_batch_at: float | None  # the hub's clock
    received_at: float | None  # of the latest status record; None: none yet
    state: dict | None  # the record's state (govedge.core.heartbeat.Heartbeat.state); None: none yet
    devices: dict  # device -> [last seen (the gateway's clock), last seq, node time, interval s], times or None


class StoredReading(NamedTuple):
    message: bytes
    gateway_id: str
    batch_seq: int
    store_id: str  # of the batch; '' for a gateway from before store ids


class RejectedMessage(NamedTuple):
    """A device message refused inside a stored batch, as kept in ``rejected``."""

    id: int
    gateway_id: str
    batch_seq: int
    leaf: int
    payload: bytes
    store_id: str  # of the batch


# the leaf a refused device message's reason names, for rows kept before rejected.batch_seq and leaf
_LEAF_IN_REASON = re.compile(r"batch ([\w.-]+)/(\d+), message (\d+): ")


class EpochOfBatch(NamedTuple):
    number: int
    heads: list[bytes]
    receipt: str  # JSON
    store_id: str  # the store that closed the epoch; '' for a gateway from before store ids


Refused = dict[int, tuple[str, str]]  # leaf index -> (code, reason)


def internal_error(exc: BaseException, what: str = "") -> tuple[str, str]:
    """The refusal of an input whose handling raised: the exception's class and text."""
    return errors.internal_error(exc, f"{what}the hub raised ")


@dataclass(frozen=True)
class ExportRow:
    device_id: str
    seq: int
    time: float | None
    gateway_id: str
    batch_seq: int
    message: bytes
    batch_created: int
    measurements: tuple[tuple[str, str | None, str], ...]  # (name, unit, value_text)
    store_id: str = ""  # of the batch; '' for a gateway from before store ids


def value_text(value) -> str:
    """A signed value as text, exactly: decimal fractions keep their digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    return float(value)


class HubStore:
    def __init__(self, url: str, keep_bytes: int = KEEP_BYTES, synchronous: str = "FULL"):
        """``keep_bytes``: how much of a rejected payload is kept (a device message always whole);
        ``synchronous``: SQLite's PRAGMA synchronous, FULL (a commit is fsynced: it survives a power cut) or
        NORMAL (it survives a crash of the process; a power cut may undo the last commits)."""
        if synchronous not in SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {list(SYNCHRONOUS)}, not {synchronous!r}")
        self.url = url
        self.keep_bytes = max(keep_bytes, wire.MAX_MESSAGE_BYTES)
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as exc:  # installed with the [hub] extra
                raise StoreError(f"a PostgreSQL store needs psycopg: install govedge[hub] ({exc})") from None
            try:
                self.db = psycopg.connect(url, autocommit=True)
            except psycopg.OperationalError as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {redact.dsn(url)}: "
                                 f"{redact.text(exc, url, paths=False)}") from None
            self.dialect = "postgresql"
        else:
            path = Path(url.removeprefix("sqlite://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.dialect = "sqlite"
        try:
            if self.dialect == "sqlite":
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute(f"PRAGMA synchronous={synchronous}")
            self._months: set[int] = set()  # PostgreSQL: the monthly partitions known to be there
            with self.transaction():  # hub workers starting together create the tables once
                if self.dialect == "postgresql":
                    self._exec("SELECT pg_advisory_xact_lock(7243001)")
                    if self._exec("SELECT to_regclass('readings') IS NULL").fetchone()[0]:
                        for statement in schema_statements(self.dialect, PARTITIONED_SCHEMA):
                            self._exec(statement)
                for statement in schema_statements(self.dialect):
                    self._exec(statement)
                self._add_columns()
                self._add_tables()
                if self.dialect == "postgresql":
                    self._partition()
                else:
                    for statement in SQLITE_INDEXES:
                        self._exec(statement)
            if self.dialect == "postgresql":  # where a batch's readings are copied to first (_add_readings)
                self._exec("CREATE TEMPORARY TABLE staged_readings (device_id TEXT, seq BIGINT, time DOUBLE PRECISION, "
                           "gateway_id TEXT, store_id TEXT, batch_seq BIGINT, leaf BIGINT, message BYTEA, key_id TEXT, "
                           "at DOUBLE PRECISION) ON COMMIT DELETE ROWS")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            errors.raise_for_file(exc, path)
            raise
        # the id of the device key a reading was verified with (the hub's service sets it from its registry)
        self.key_id_of: Callable[[wire.Reading], str | None] = lambda reading: None

    def _columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return {row[1] for row in self._exec(f"PRAGMA table_info({table})").fetchall()}
        return {row[0] for row in self._exec("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_schema = current_schema() AND table_name = ?",
                                             (table,)).fetchall()}

    def _add_columns(self) -> None:
        """Migration of a store made by an earlier version: the columns it lacks, filled in."""
        have = {t: self._columns(t) for t in {t for t, *_ in ADDED_COLUMNS}}
        added = set()
        for table, column, definition, _what in ADDED_COLUMNS:
            if column not in have[table]:
                self._exec(f"ALTER TABLE {table} ADD COLUMN {column} "
                           + definition.format(**TYPES[self.dialect]))
                added.add((table, column))
        for table, (before, after) in RE_KEYED.items():
            if (table, "store_id") in added:
                self._rekey(table, before, after)
        if ("readings", "at") in added:  # readings from before: filed under their time, else their batch's
            self._exec("UPDATE readings SET at = coalesce(time, (SELECT created FROM batches b WHERE b.gateway_id = "
                       "readings.gateway_id AND b.store_id = readings.store_id AND b.seq = readings.batch_seq))")
        if ("measurements", "at") in added:
            self._exec("UPDATE measurements SET at = (SELECT at FROM readings r WHERE r.device_id = "
                       "measurements.device_id AND r.seq = measurements.seq)")
        if ("rejected", "sha256") in added:  # rows kept whole until now: their hash and size
            self._exec("UPDATE rejected SET size = length(payload)")
            last = -1
            while rows := self._exec("SELECT id, payload FROM rejected WHERE id > ? ORDER BY id LIMIT 100",
                                     (last,)).fetchall():
                for id_, payload in rows:
                    self._exec("UPDATE rejected SET sha256 = ? WHERE id = ?",
                               (hashlib.sha256(bytes(payload)).digest(), id_))
                last = rows[-1][0]

    def _add_tables(self) -> None:
        """Migration of a store made by an earlier version: the tables it lacks, made; a new gateway_status gets
        when the hub last stored a batch of each gateway (one pass over the batches, once)."""
        new = not self._columns("gateway_status")
        for statement in schema_statements(self.dialect, ADDED_TABLES):
            self._exec(statement)
        if new:
            self._exec("INSERT INTO gateway_status (gateway_id, last_batch_at) SELECT gateway_id, max(received_at) "
                       "FROM batches GROUP BY gateway_id")

    def _rekey(self, table: str, before: str, after: str) -> None:
        """The table's primary key ``before`` becomes ``after``, its rows as they are (inside the migration's
        transaction). SQLite cannot change a primary key: the table is made again under it and filled."""
        if self.dialect == "postgresql":
            (name,) = self._exec("SELECT constraint_name FROM information_schema.table_constraints WHERE table_schema "
                                 "= current_schema() AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
                                 (table,)).fetchone()
            self._exec(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            self._exec(f"ALTER TABLE {table} ADD PRIMARY KEY {after}")
            return
        (sql,) = self._exec("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if sql.count(f"PRIMARY KEY {before}") != 1:
            raise StoreError(f"the store's table {table} has no primary key {before} to widen by the store id; "
                             "was it changed by hand?")
        made = re.sub(rf"^CREATE TABLE (IF NOT EXISTS )?\"?{table}\"?", f"CREATE TABLE {table}_rekeyed", sql)
        self._exec(made.replace(f"PRIMARY KEY {before}", f"PRIMARY KEY {after}"))
        self._exec(f"INSERT INTO {table}_rekeyed SELECT * FROM {table}")
        self._exec(f"DROP TABLE {table}")
        self._exec(f"ALTER TABLE {table}_rekeyed RENAME TO {table}")

    def _partition(self) -> None:
        """Migration of a PostgreSQL store made before partitioning (inside the opening transaction): its
        readings and measurements moved into monthly partitions, once (it takes as long as copying them)."""
        if self._exec("SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                      "WHERE c.relname IN ('readings', 'measurements') "
                      "AND c.relnamespace = current_schema()::regnamespace").fetchone()[0] == 2:
            return
        for table in partitions.PARTITIONED:
            self._exec(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        for statement in schema_statements(self.dialect, PARTITIONED_SCHEMA):
            self._exec(statement)
        low, high = self._exec("SELECT min(at), max(at) FROM readings_unpartitioned").fetchone()
        self._make_partitions(self._months_between(low, high))
        self._exec(f"INSERT INTO readings ({READING_COLUMNS}, flag) SELECT {READING_COLUMNS}, flag "
                   "FROM readings_unpartitioned")
        self._exec(f"INSERT INTO measurements ({MEASUREMENT_COLUMNS}) SELECT {MEASUREMENT_COLUMNS} "
                   "FROM measurements_unpartitioned")
        for table in partitions.PARTITIONED:
            self._exec(f"DROP TABLE {table}_unpartitioned")

    @staticmethod
    def _months_between(low: float | None, high: float | None) -> list[int]:
        if low is None:
            return []
        month, last, out = partitions.month_of(low), partitions.month_of(high), []
        while month <= last:
            out.append(month)
            month = partitions.add_months(month, 1)
        return out

    def _make_partitions(self, months) -> None:
        """Inside a transaction: the partitions of ``months`` (and of the time before 2024), made if missing.
        Those there already are looked up first: making one locks its partitioned table."""
        names = [f"{table}_pold" for table in partitions.PARTITIONED] + [
            partitions.name(table, month) for table in partitions.PARTITIONED for month in months]
        there = {n for (n,) in self._exec("SELECT c.relname FROM pg_class c WHERE c.relname = ANY(?) "
                                          "AND c.relnamespace = current_schema()::regnamespace",
                                          (names,)).fetchall()}
        if len(there) < len(names):
            self._exec("SELECT pg_advisory_xact_lock(7243004)")
            for table in partitions.PARTITIONED:
                if f"{table}_pold" not in there:
                    self._exec(partitions.create_old(table))
                for month in sorted(months):
                    if partitions.name(table, month) not in there:
                        self._exec(partitions.create(table, month))
        self._months.update(months)

    def prepare(self, times) -> None:
        """PostgreSQL, outside a transaction: the monthly partitions of the readings timed ``times`` made
        before a transaction stores them, each month in a short transaction of its own. Making a table locks
        its partitioned table until the commit, so inside a batch's transaction it could wait on another
        worker's that waits on it. SQLite: nothing."""
        if self.dialect != "postgresql":
            return
        for month in sorted(self._new_months(times)):
            with self.transaction():
                self._make_partitions([month])

    def prepare_ahead(self, now: float | None = None) -> None:
        """The partitions of the current month and the ``MONTHS_AHEAD`` after it (the hub's hourly
        housekeeping, from its start on): the write path never waits to make a table."""
        month = partitions.month_of(time.time() if now is None else now)
        self.prepare(partitions.add_months(month, n) for n in range(partitions.MONTHS_AHEAD + 1))

    def expire(self, keep_months: int, now: float | None = None) -> dict[str, int]:
        """Retention, outside a transaction: readings and measurements filed more than ``keep_months`` whole
        months before the current one (PostgreSQL: their monthly partitions dropped whole; SQLite, and
        PostgreSQL's readings from before 2024: deleted), and the aggregates of windows that ended before.
        Returns what went: {'partitions': n, 'readings': n, 'aggregates': n}. Batches and epochs, the gateways'
        signed evidence, stay."""
        now = time.time() if now is None else now
        cutoff = partitions.cutoff(now, keep_months)
        gone = {"partitions": 0, "readings": 0, "aggregates": 0}
        if cutoff is None:
            return gone
        if self.dialect == "postgresql":
            names = [n for (n,) in self._exec(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p "
                "ON p.oid = i.inhparent WHERE p.relname IN ('readings', 'measurements') "
                "AND p.relnamespace = current_schema()::regnamespace").fetchall()]
            # measurements first: a reading never stays without its values
            for name in sorted(partitions.expired(names, now, keep_months), key=lambda n: not n.startswith("m")):
                with self.transaction():
                    if name.startswith("readings"):
                        (n,) = self._exec(f"SELECT count(*) FROM {name}").fetchone()
                        gone["readings"] += n
                    self._exec(f"DROP TABLE {name}")
                    gone["partitions"] += 1
                self._months.discard(partitions.month_of_name(name))
        with self.transaction():
            self._exec("DELETE FROM measurements WHERE at < ?", (cutoff,))
            gone["readings"] += self._exec("DELETE FROM readings WHERE at < ?", (cutoff,)).rowcount
            gone["aggregates"] = self._exec("DELETE FROM aggregates WHERE window_end < ?", (cutoff,)).rowcount
        return gone

    def _exec(self, sql: str, args: tuple = ()):
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.db.execute(sql, args)

    @property
    def where(self) -> str:
        """The store's URL without a password, for messages."""
        return redact.dsn(self.url)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        self._exec("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        try:
            yield self
        except BaseException:
            self._exec("ROLLBACK")
            raise
        self._exec("COMMIT")

    # savepoints: one input's statements undone without the others' in the same transaction
    def savepoint(self, name: str) -> None:
        self._exec(f"SAVEPOINT {name}")

    def undo_to(self, name: str) -> None:
        """Undoes what was done since the savepoint, which stays (PostgreSQL's failed transaction too)."""
        self._exec(f"ROLLBACK TO SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self._exec(f"RELEASE SAVEPOINT {name}")

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be used now (connection lost, disk full, locked,
        damaged) rather than that one input could not be stored: then nothing may be acknowledged."""
        if self.dialect == "sqlite":
            return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
        import psycopg

        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    # -- inside a transaction ----------------------------------------------------------

    def add_batch(self, b: Batch, readings: list[wire.Reading | None] | None = None) -> Refused | None:
        """Stores the batch with its readings and aggregates; None if it was here already.

        ``readings``: the batch's device messages, decoded (and verified) already, in order;
        None for a leaf the hub refused, which the batch's ``refused`` column lists.

        Returns the leaves the store refuses, with (code, reason), also listed in ``refused``: a
        reading whose device id and sequence number are stored already with other bytes.
        Raises StoreError when another batch with the same id is here (a gateway whose
        sequence numbers went back: its store was lost), leaving the first one as it is.
        """
        if readings is None:
            readings = [wire.decode_unverified(m) for m in b.messages]
        return self._add(b, readings, each=False)

    def add_batch_each(self, b: Batch, readings: list[wire.Reading | None]) -> Refused | None:
        """add_batch with each reading in a savepoint of its own, for a batch add_batch failed on
        (the caller has undone that): a reading that fails is refused (internal_error), the rest
        stored. Raises what the batch's own row or aggregates raise."""
        return self._add(b, readings, each=True)

    def _add(self, b: Batch, readings: list[wire.Reading | None], each: bool) -> Refused | None:
        refused = [leaf for leaf, r in enumerate(readings) if r is None]
        if not self._add_batch_row(b, refused):
            return None
        self._add_aggregates(b)
        by_store: Refused = {}
        if not each:
            for leaf, refusal in self._add_readings(b, readings).items():
                by_store[leaf] = refusal
            if by_store:
                self._exec("UPDATE batches SET refused = ? WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                           (_leaf_list(refused + list(by_store)), b.gateway_id, b.store_id or "", b.seq))
            return by_store
        for leaf, (message, r) in enumerate(zip(b.messages, readings, strict=True)):
            if r is None:
                continue
            self.savepoint("reading")
            try:
                refusal = self._add_reading(b, leaf, message, r)
            except Exception as exc:  # noqa: BLE001 - whatever one reading raises, it alone is left out
                if self.unavailable(exc):
                    raise
                self.undo_to("reading")
                refusal = internal_error(exc, "could not be stored: ")
            self.release("reading")
            if refusal:
                by_store[leaf] = refusal
        if by_store:
            self._exec("UPDATE batches SET refused = ? WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                       (_leaf_list(refused + list(by_store)), b.gateway_id, b.store_id or "", b.seq))
        return by_store

    def _add_batch_row(self, b: Batch, refused: list[int]) -> bool:
        inserted = self._exec(
            "INSERT INTO batches (gateway_id, store_id, seq, created, received_at, mode, size, root, cose, refused) "
            "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (gateway_id, store_id, seq) DO NOTHING",
            (b.gateway_id, b.store_id or "", b.seq, b.created, time.time(), b.mode, b.size, b.root, b.cose,
             _leaf_list(refused))).rowcount
        if not inserted:
            row = self._exec("SELECT cose FROM batches WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                             (b.gateway_id, b.store_id or "", b.seq)).fetchone()
            if bytes(row[0]) != b.cose:
                raise StoreError(f"batch {b.id} is here already with other contents: the gateway's "
                                 "sequence numbers went back in one store (was its store restored from an old "
                                 "copy, or lost by a gateway from before store ids?)")
        return bool(inserted)

    def _add_readings(self, b: Batch, readings: list[wire.Reading | None]) -> Refused:
        """A batch's readings and their measurements, a few statements for all of them: on PostgreSQL the
        readings are copied (COPY) into a temporary table of the connection and inserted from there in one
        statement that returns those it inserted, their measurements copied straight in; on SQLite
        executemany. A reading not inserted is here already: kept once if its
        bytes are the same, else refused (conflicting_reading), as ``_add_reading`` does one by one."""
        rows = [(r.device_id, r.seq, r.time, b.gateway_id, b.store_id or "", b.seq, leaf, message,
                 self.key_id_of(r), r.time if r.time is not None else b.created)
                for leaf, (message, r) in enumerate(zip(b.messages, readings, strict=True)) if r is not None]
        if not rows:
            return {}
        if self.dialect == "postgresql":
            self._ensure_months(row[9] for row in rows)
            with self.db.cursor().copy(f"COPY staged_readings ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(READING_TYPES)  # binary: nothing to format here nor to parse in the server
                for d, seq, t, g, st, bs, leaf, m, k, at in rows:
                    copy.write_row((d, seq, None if t is None else float(t), g, st, bs, leaf, m, k, float(at)))
            inserted = {leaf for (leaf,) in self._exec(
                f"INSERT INTO readings ({READING_COLUMNS}) SELECT {READING_COLUMNS} FROM staged_readings ORDER BY leaf "
                f"ON CONFLICT {self._reading_key} DO NOTHING RETURNING leaf").fetchall()}
            self._exec("DELETE FROM staged_readings")
        else:
            before = self.db.total_changes
            self.db.executemany(f"INSERT INTO readings ({READING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                                "ON CONFLICT (device_id, seq) DO NOTHING", rows)
            inserted = {row[6] for row in rows}
            if self.db.total_changes - before < len(rows):  # some were here already: which ones
                inserted = {row[6] for row in rows if self._exec(
                    "SELECT gateway_id, store_id, batch_seq, leaf FROM readings WHERE device_id = ? AND seq = ?",
                    row[:2]).fetchone() == (b.gateway_id, b.store_id or "", b.seq, row[6])}
        by_store: Refused = {}
        measurements = []
        for device_id, seq, _t, _g, _s, _b, leaf, message, _k, at in rows:
            if leaf not in inserted:
                held = self.reading_of(device_id, seq)
                if held.message != message:
                    by_store[leaf] = _conflict(device_id, seq, held)
                continue  # in an earlier batch (or at an earlier leaf of this one) already: kept once
            for pos, m in enumerate(readings[leaf].measurements):
                measurements.append((device_id, seq, m.name, pos, m.unit, _number(m.value), value_text(m.value), at))
        if measurements and self.dialect == "postgresql":
            with self.db.cursor().copy(f"COPY measurements ({MEASUREMENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(MEASUREMENT_TYPES)
                for d, seq, name, pos, unit, value, text, at in measurements:
                    copy.write_row((d, seq, name, pos, unit, value, text, float(at)))
        elif measurements:
            self.db.executemany(f"INSERT INTO measurements ({MEASUREMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                                measurements)
        return by_store

    def _add_reading(self, b: Batch, leaf: int, message: bytes, r: wire.Reading) -> Refusal | None:
        """Stores a reading; its refusal when another reading holds its device id and sequence number."""
        at = r.time if r.time is not None else b.created
        self._ensure_months([at])
        if not self._exec(
                f"INSERT INTO readings ({READING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                f"ON CONFLICT {self._reading_key} DO NOTHING",
                (r.device_id, r.seq, r.time, b.gateway_id, b.store_id or "", b.seq, leaf, message,
                 self.key_id_of(r), at)).rowcount:
            held = self.reading_of(r.device_id, r.seq)
            if held.message == message:
                return None  # in an earlier batch already (a gateway that sent it twice): kept once
            return _conflict(r.device_id, r.seq, held)
        for pos, m in enumerate(r.measurements):
            self._exec(f"INSERT INTO measurements ({MEASUREMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                       (r.device_id, r.seq, m.name, pos, m.unit, _number(m.value), value_text(m.value), at))

    @property
    def _reading_key(self) -> str:
        """The unique key a reading is kept once by: (device, seq), and on PostgreSQL, whose partitioned tables
        need the partition key in it, the time it is filed under as well (the same bytes: the same time)."""
        return "(device_id, seq, at)" if self.dialect == "postgresql" else "(device_id, seq)"

    def _ensure_months(self, times) -> None:
        """Inside a transaction, PostgreSQL: partitions for readings of months ``prepare`` did not make (a
        caller that stores without the service: tests, tools); the service prepared them already."""
        if self.dialect == "postgresql":
            months = self._new_months(times)
            if months:
                self._make_partitions(months)

    def _new_months(self, times) -> set[int]:
        """The months of ``times`` without a partition known to this store; the usual batch, all of one month,
        costs two look-ups of the calendar, not one a reading."""
        times = list(times)
        if not times:
            return set()
        low, high = partitions.month_of(min(times)), partitions.month_of(max(times))
        if low == high:
            return {low} - self._months
        return {partitions.month_of(t) for t in times} - self._months

    def _add_aggregates(self, b: Batch) -> None:
        """The batch's aggregates, in one statement (PostgreSQL: unnest; SQLite: executemany)."""
        rows = [(b.gateway_id, b.store_id or "", b.seq, a["device_id"], a["name"], a.get("unit"), a["window_start"],
                 a["window_end"], a["count"], a["min"], a["max"], a["mean"], a["stdev"], a["last"],
                 a["first_seq"], a["last_seq"]) for a in b.aggregates]
        if not rows:
            return
        columns = ("INSERT INTO aggregates (gateway_id, store_id, batch_seq, device_id, name, unit, window_start, "
                   "window_end, count, min, max, mean, stdev, last, first_seq, last_seq) ")
        if self.dialect == "postgresql":
            self._exec(columns + "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], "
                       "?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::float8[], ?::float8[], ?::float8[], "
                       "?::float8[], ?::float8[], ?::bigint[], ?::bigint[]) ON CONFLICT DO NOTHING",
                       tuple(list(column) for column in zip(*rows)))
        else:
            self.db.executemany(columns + "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows)

    def add_epoch(self, rec) -> bool:
        """Stores a verified epoch record (govedge.core.epoch.EpochRecord); False if it was here already."""
        return bool(self._exec(
            "INSERT INTO epochs (gateway_id, store_id, number, first_batch, last_batch, size, root, heads, receipt, "
            "cose) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (gateway_id, store_id, number) DO NOTHING",
            (rec.epoch.gateway_id, rec.epoch.store_id or "", rec.epoch.number, rec.first, rec.last, len(rec.epoch.heads), rec.epoch.root,
             cbor2.dumps(list(rec.epoch.heads)), rec.receipt.dumps(), rec.cose)).rowcount)

    def lock_gateways(self, gateway_ids) -> None:
        """Inside a transaction, before it writes gateway_status: on PostgreSQL the gateways' rows are taken in
        one order by every worker (an advisory lock per gateway, by a hash of its id), so that two transactions
        writing the rows of the same gateways in other orders never deadlock; SQLite has one writer anyway."""
        if self.dialect != "postgresql":
            return
        for key in sorted({int.from_bytes(hashlib.sha256(g.encode()).digest()[:4], "big", signed=True)
                           for g in gateway_ids}):
            self._exec("SELECT pg_advisory_xact_lock(7243003, ?::integer)", (key,))

    def heard(self, gateway_id: str) -> None:
        """Inside a transaction: a batch or epoch record of the gateway came now (its row's last_batch_at)."""
        self._exec("INSERT INTO gateway_status (gateway_id, last_batch_at) VALUES (?, ?) ON CONFLICT (gateway_id) "
                   "DO UPDATE SET last_batch_at = excluded.last_batch_at", (gateway_id, time.time()))

    def add_heartbeat(self, h) -> Refusal | None:
        """Inside a transaction: the gateway's verified status record (govedge.core.heartbeat.Heartbeat) replaces
        its latest one if it is newer: signed later by the gateway's clock, or numbered higher in the same store
        (a clock set back). A record the hub had before, or one older than it, is neither. A store restored from
        an old copy numbers lower, and is taken by its time; a replaced SD card, a store of another id, too.
        Returns None when stored, ``DUPLICATE`` for the latest one again, else the refusal (stale_heartbeat: a
        replay, or a record overtaken by a newer one)."""
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        select = f"SELECT store_id, seq, sent_at, devices, cose FROM gateway_status WHERE gateway_id = ?{lock}"
        row = self._exec(select, (h.gateway_id,)).fetchone()
        if row is None:
            self._exec("INSERT INTO gateway_status (gateway_id) VALUES (?) ON CONFLICT (gateway_id) DO NOTHING",
                       (h.gateway_id,))
            row = self._exec(select, (h.gateway_id,)).fetchone()
        store_id, seq, sent_at, devices, cose = row
        if cose is not None:
            if bytes(cose) == h.cose:
                return DUPLICATE
            if not (h.time > sent_at or (store_id == h.store_id and h.seq > seq)):
                return Refusal("stale_heartbeat", f"status record #{h.seq} of gateway {h.gateway_id!r} (store "
                                                  f"{h.store_id}, signed at {h.time}) is not newer than the latest "
                                                  f"the hub has (#{seq} of store {store_id}, signed at {sent_at}): "
                                                  "a replay, or a record overtaken by a newer one")
        self._exec("UPDATE gateway_status SET received_at = ?, store_id = ?, seq = ?, sent_at = ?, state = ?, "
                   "devices = ?, cose = ? WHERE gateway_id = ?",
                   (time.time(), h.store_id, h.seq, h.time, json.dumps(h.state(), sort_keys=True),
                    json.dumps(_devices_seen(h, json.loads(devices) if devices else {}), sort_keys=True), h.cose,
                    h.gateway_id))
        return None

    def gateway_statuses(self, devices: bool = True) -> list[GatewayStatus]:
        """Every gateway's row of gateway_status, by gateway id (one row per gateway: cheap); ``devices``: with
        their nodes (False: ``devices`` is {}, a Prometheus scrape needs none)."""
        column = "devices" if devices else "NULL"
        return [GatewayStatus(g, b, r, json.loads(s) if s else None, json.loads(d) if d else {})
                for g, b, r, s, d in self._exec(f"SELECT gateway_id, last_batch_at, received_at, state, {column} "
                                                "FROM gateway_status ORDER BY gateway_id").fetchall()]

    def recent_reading_times(self, device_id: str, limit: int = 8) -> list[tuple[int, float]]:
        """(seq, node time) of the device's readings of the highest sequence numbers that have a time, newest
        first: one index range of the readings' primary key."""
        return [(s, t) for s, t in self._exec("SELECT seq, time FROM readings WHERE device_id = ? ORDER BY seq DESC "
                                              "LIMIT ?", (device_id, limit)).fetchall() if t is not None]

    def reading_of(self, device_id: str, seq: int) -> StoredReading | None:
        """A stored reading's signed bytes and the gateway's batch it came in."""
        row = self._exec("SELECT message, gateway_id, batch_seq, store_id FROM readings WHERE device_id = ? AND "
                         "seq = ?", (device_id, seq)).fetchone()
        return None if row is None else StoredReading(bytes(row[0]), row[1], row[2], row[3])

    def batch_bytes(self, gateway_id: str, seq: int, store_id: str = "") -> bytes | None:
        """The batch's signed bytes; ``store_id``: '' for a batch of a gateway from before store ids."""
        row = self._exec("SELECT cose FROM batches WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                         (gateway_id, store_id, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def epoch_of(self, gateway_id: str, batch_seq: int, store_id: str = "", head: bytes | None = None
                 ) -> EpochOfBatch | None:
        """The gateway's epoch holding the batch (``head``: the one whose heads hold it). An epoch covers the
        batches of its own store; a batch without a store id also those of any store of its gateway, as an
        older store closes its epochs under the id it got when it was first opened by a newer gateway."""
        rows = self._exec("SELECT number, heads, receipt, store_id FROM epochs WHERE gateway_id = ? AND (store_id = ? "
                          "OR ? = '') AND ? BETWEEN first_batch AND last_batch ORDER BY store_id",
                          (gateway_id, store_id, store_id, batch_seq)).fetchall()
        for number, heads, receipt, epoch_store in rows:
            e = EpochOfBatch(number, cbor2.loads(bytes(heads)), receipt, epoch_store)
            if head is None or head in e.heads:
                return e
        return None

    def reject(self, topic: str, gateway_id: str | None, code: str, reason: str, payload: bytes,
               device_id: str | None = None, seq: int | None = None, batch_seq: int | None = None,
               leaf: int | None = None, store_id: str | None = None) -> None:
        """Keeps what was refused: the payload's first ``keep_bytes``, its SHA-256 and size.

        ``gateway_id``: the gateway whose topic it came on (its share of the rejected budget); ``batch_seq`` and
        ``leaf``, ``store_id``: where a refused device message sits in its (stored) batch of that gateway."""
        payload = bytes(payload)
        self._exec("INSERT INTO rejected (received_at, topic, gateway_id, code, reason, payload, sha256, size, "
                   "device_id, seq, batch_seq, leaf, store_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (time.time(), one_line(topic, MAX_TOPIC_CHARS), gateway_id and one_line(gateway_id, MAX_TOPIC_CHARS),
                    code, one_line(reason, MAX_REASON_CHARS), payload[:self.keep_bytes],
                    hashlib.sha256(payload).digest(), len(payload), device_id, seq, batch_seq, leaf, store_id))

    def unknown_device_rows(self) -> list[tuple[int, str]]:
        """(id, device id) of the device messages refused as ``unknown_device``, oldest first."""
        return [(i, d) for i, d in self._exec("SELECT id, device_id FROM rejected WHERE code = 'unknown_device' "
                                              "AND device_id IS NOT NULL ORDER BY id").fetchall()]

    def unknown_device_messages(self, ids: list[int]) -> list[RejectedMessage]:
        """Inside a transaction: those of the rows ``ids`` still refused as ``unknown_device`` that name their
        batch and leaf, oldest first; on PostgreSQL locked until the commit (two workers re-verify each once)."""
        if not ids:
            return []
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        out = []
        for i, gateway_id, batch_seq, leaf, payload, reason, store_id in self._exec(
                "SELECT id, gateway_id, batch_seq, leaf, payload, reason, store_id FROM rejected WHERE code = 'unknown_device' "
                f"AND id IN ({','.join('?' * len(ids))}) ORDER BY id{lock}", tuple(ids)).fetchall():
            if batch_seq is None and (m := _LEAF_IN_REASON.match(reason)) and m[1] == gateway_id:
                batch_seq, leaf = int(m[2]), int(m[3])
            if gateway_id is not None and batch_seq is not None and leaf is not None:
                out.append(RejectedMessage(i, gateway_id, batch_seq, leaf, bytes(payload), store_id or ""))
        return out

    def add_refused_reading(self, b: Batch, row: RejectedMessage, r: wire.Reading) -> Refusal | None:
        """Inside a transaction: stores a device message refused before (``row``) as the reading of its batch's
        leaf, takes the leaf off the batch's ``refused`` list and deletes the row; returns the store's refusal
        instead (conflicting_reading), changing nothing. A reading held already with the same bytes is kept
        once."""
        refusal = self._add_reading(b, row.leaf, row.payload, r)
        if refusal is not None:
            return refusal
        key = (b.gateway_id, b.store_id or "", b.seq)
        (refused,) = self._exec("SELECT refused FROM batches WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                                key).fetchone()
        self._exec("UPDATE batches SET refused = ? WHERE gateway_id = ? AND store_id = ? AND seq = ?",
                   (_leaf_list([leaf for leaf in json.loads(refused) if leaf != row.leaf]), *key))
        self._exec("DELETE FROM rejected WHERE id = ?", (row.id,))
        return None

    def recode_rejected(self, row_id: int, code: str, reason: str) -> None:
        """Inside a transaction: a rejected row verified again and refused for another reason now."""
        self._exec("UPDATE rejected SET code = ?, reason = ? WHERE id = ?",
                   (code, one_line(reason, MAX_REASON_CHARS), row_id))

    def wait_for_gateway(self, topic: str, gateway_id: str, payload: bytes, per_gateway: tuple[int, int],
                         total: tuple[int, int]) -> bool:
        """Keeps a delivery of a gateway the hub does not know (yet); False when its gateway or the table is at
        its bound ((rows, bytes) each): nothing is kept then."""
        payload = bytes(payload)
        sha = hashlib.sha256(payload).digest()
        if self._exec("SELECT 1 FROM waiting_for_gateway WHERE sha256 = ?", (sha,)).fetchone():
            return True  # delivered again: it waits once
        for where, args, (rows, size) in (("WHERE gateway_id = ?", (gateway_id,), per_gateway), ("", (), total)):
            n, used = self._exec(f"SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM waiting_for_gateway "
                                 f"{where}", args).fetchone()
            if n >= rows or used + len(payload) > size:
                return False
        self._exec("INSERT INTO waiting_for_gateway (received_at, topic, gateway_id, payload, sha256) "
                   "VALUES (?, ?, ?, ?, ?)", (time.time(), topic, gateway_id, payload, sha))
        return True

    def waiting_for_gateway(self) -> list[tuple[int, str, bytes]]:
        """(id, topic, payload) of the deliveries waiting for their gateway, oldest first."""
        return [(i, t, bytes(p)) for i, t, p in
                self._exec("SELECT id, topic, payload FROM waiting_for_gateway ORDER BY id").fetchall()]

    def done_waiting(self, row_id: int) -> None:
        self._exec("DELETE FROM waiting_for_gateway WHERE id = ?", (row_id,))

    def prune_rejected(self, max_bytes: int, max_rows: int) -> dict[str, int]:
        """Deletes the oldest rejected rows over the budget; how many of each gateway's.

        The budget is shared fairly: a gateway below its share keeps all its rows, and the
        gateways with the most rows or bytes lose their oldest first. Bytes are the payload
        bytes kept. Inside a transaction; on PostgreSQL one worker at a time."""
        if self.dialect == "postgresql":
            self._exec("SELECT pg_advisory_xact_lock(7243002)")
        per_gateway = self._exec("SELECT coalesce(gateway_id, ''), count(*), coalesce(sum(length(payload)), 0) "
                                 "FROM rejected GROUP BY coalesce(gateway_id, '')").fetchall()
        row_cap = fair_share([rows for _, rows, _ in per_gateway], max_rows)
        byte_cap = fair_share([size for _, _, size in per_gateway], max_bytes)
        pruned: dict[str, int] = {}
        for gateway_id, rows, size in per_gateway:
            if rows <= row_cap and size <= byte_cap:
                continue
            kept_rows = kept_bytes = 0
            newest_first = self._exec("SELECT id, length(payload) FROM rejected WHERE coalesce(gateway_id, '') = ? "
                                      "ORDER BY id DESC", (gateway_id,)).fetchall()
            for id_, n in newest_first:
                if kept_rows + 1 > row_cap or kept_bytes + n > byte_cap:
                    pruned[gateway_id] = self._exec("DELETE FROM rejected WHERE coalesce(gateway_id, '') = ? "
                                                    "AND id <= ?", (gateway_id, id_)).rowcount
                    break
                kept_rows, kept_bytes = kept_rows + 1, kept_bytes + n
        return pruned

    def refusal_of(self, device_id: str, seq: int) -> Refusal | None:
        """The hub's latest refusal of that device message, while it is kept."""
        row = self._exec("SELECT code, reason FROM rejected WHERE device_id = ? AND seq = ? ORDER BY id DESC",
                         (device_id, seq)).fetchone()
        return None if row is None else Refusal._make(row)

    # -- reading ------------------------------------------------------------------------

    def count(self, table: str) -> int:
        assert table in ("batches", "readings", "measurements", "aggregates", "epochs", "rejected",
                         "waiting_for_gateway")
        return self._exec(f"SELECT count(*) FROM {table}").fetchone()[0]

    def batches_in_epochs(self) -> int:
        """How many batches the stored epochs cover."""
        return self._exec("SELECT coalesce(sum(size), 0) FROM epochs").fetchone()[0]

    def key_bounds(self) -> dict[tuple[str, str], int]:
        return {(s, k): b for s, k, b in self._exec("SELECT signer, key_id, valid_below_seq FROM key_bounds")}

    def learn_key_bound(self, signer: str, key_id: str, seq: int) -> None:
        """Inside a transaction: the signer's retired key ``key_id`` is valid only below ``seq`` (kept if known)."""
        self._exec("INSERT INTO key_bounds (signer, key_id, valid_below_seq) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                   (signer, key_id, seq))

    def flag_revoked(self, device_id: str, key_id: str, since: float) -> int:
        """Inside a transaction: flags the stored readings of a revoked device key timed from ``since`` on or
        untimed (``flag`` = 'revoked_key'); returns how many were newly flagged."""
        return self._exec("UPDATE readings SET flag = 'revoked_key' WHERE device_id = ? AND key_id = ? AND "
                          "(time IS NULL OR time >= ?) AND flag IS NULL", (device_id, key_id, since)).rowcount

    def flagged(self, device_id: str, seq: int) -> tuple[str, str | None] | None:
        """A stored reading's flag and the id of the key that verified it; None when it has no flag."""
        row = self._exec("SELECT flag, key_id FROM readings WHERE device_id = ? AND seq = ? AND flag IS NOT NULL",
                         (device_id, seq)).fetchone()
        return None if row is None else (row[0], row[1])

    def flag_of(self, device_id: str, seq: int) -> str | None:
        row = self._exec("SELECT flag FROM readings WHERE device_id = ? AND seq = ?", (device_id, seq)).fetchone()
        return None if row is None else row[0]

    def reading_ids(self) -> set[tuple[str, int]]:
        return {(d, s) for d, s in self._exec("SELECT device_id, seq FROM readings").fetchall()}

    def rejections(self) -> list[Refusal]:
        return list(map(Refusal._make, self._exec("SELECT code, reason FROM rejected ORDER BY id")))

    def export_rows(self, since: float | None = None, until: float | None = None) -> Iterator[ExportRow]:
        """Readings in (device id, sequence number) order; the window applies to the node's time,
        or to the batch's creation time for readings of a node whose clock was not set."""
        order = 'r.device_id COLLATE "C", r.seq' if self.dialect == "postgresql" else "r.device_id, r.seq"
        # the window on the time a reading is filed under (``at``: the node's time, else the batch's), which the
        # store indexes (SQLite) or partitions by (PostgreSQL: only the months of the window are read)
        window = [(f"r.at {op} ?", bound) for op, bound in ((">=", since), ("<", until)) if bound is not None]
        sql = ("SELECT r.device_id, r.seq, r.time, r.gateway_id, r.batch_seq, r.message, b.created, "
               "m.name, m.unit, m.value_text, r.store_id "
               "FROM readings r JOIN batches b ON b.gateway_id = r.gateway_id AND b.store_id = r.store_id "
               "AND b.seq = r.batch_seq "
               "JOIN measurements m ON m.device_id = r.device_id AND m.seq = r.seq AND m.at = r.at "
               + (f"WHERE {' AND '.join(w for w, _ in window)} " if window else "") + f"ORDER BY {order}, m.pos")
        head, values = None, []
        for device_id, seq, t, gateway_id, batch_seq, message, created, name, unit, text, store_id in \
                self._exec(sql, tuple(float(bound) for _, bound in window)):
            if head is not None and (device_id, seq) != head[:2]:
                yield ExportRow(*head, tuple(values), store)
                values = []
            head, store = (device_id, seq, t, gateway_id, batch_seq, bytes(message), created), store_id
            values.append((name, unit, text))
        if head is not None:
            yield ExportRow(*head, tuple(values), store)


    # -- reports (govedge.hub.report): one station's readings of a period, streamed ------------------------

    def report_values(self, device_id: str, quantities: dict[str, str], since: float, until: float
                      ) -> Iterator[tuple[str, Iterator[tuple[float, str]]]]:
        """For each quantity (name -> unit; another unit does not count): its name and the (node time, value as
        signed) of the device's numeric measurements of it timed in [since, until), of readings not flagged, in
        no particular order: one range of the measurements' datastream index (device_id, name, at) each."""
        sql = ("SELECT r.time, m.value_text FROM measurements m JOIN readings r ON r.device_id = m.device_id "
               "AND r.seq = m.seq AND r.at = m.at WHERE m.device_id = ? AND m.name = ? AND m.at >= ? AND m.at < ? "
               "AND m.unit = ? AND m.value IS NOT NULL AND r.time IS NOT NULL AND r.flag IS NULL")
        for name, unit in quantities.items():
            yield name, self._exec(sql, (device_id, name, float(since), float(until), unit))

    def report_messages(self, device_id: str, quantities: dict[str, str], since: float, until: float
                        ) -> Iterator[tuple[int, bytes]]:
        """(seq, signed bytes) of the readings ``report_values`` draws on, in sequence number order: those with
        at least one of its measurements."""
        match = " OR ".join("(m.name = ? AND m.unit = ?)" for _ in quantities)
        sql = ("SELECT r.seq, r.message FROM readings r WHERE r.device_id = ? AND r.at >= ? AND r.at < ? "
               "AND r.time IS NOT NULL AND r.flag IS NULL AND EXISTS (SELECT 1 FROM measurements m WHERE "
               f"m.device_id = r.device_id AND m.seq = r.seq AND m.at = r.at AND m.value IS NOT NULL AND ({match})) "
               "ORDER BY r.seq")
        args = [device_id, float(since), float(until)] + [x for pair in quantities.items() for x in pair]
        for seq, message in self._exec(sql, tuple(args)):
            yield seq, bytes(message)

    def report_left_out(self, device_id: str, since: float, until: float) -> dict[str, int]:
        """The device's readings filed in [since, until) that no report counts for a reason of the store's:
        flagged (e.g. revoked_key), and without a node time (filed under their batch's time)."""
        flagged, untimed = self._exec(
            "SELECT coalesce(sum(CASE WHEN flag IS NOT NULL THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN time IS NULL THEN 1 ELSE 0 END), 0) FROM readings "
            "WHERE device_id = ? AND at >= ? AND at < ?", (device_id, float(since), float(until))).fetchone()
        return {"flagged": int(flagged), "untimed": int(untimed)}


def schema_statements(dialect: str, schema: str = SCHEMA) -> list[str]:
    """SCHEMA's statements in the dialect: the tables as the first version made them (``schema``: ADDED_TABLES,
    those added since)."""
    schema = "\n".join(line.split("--")[0] for line in schema.format(**TYPES[dialect]).splitlines())
    return [statement for statement in schema.split(";") if statement.strip()]


def _devices_seen(h, before: dict) -> dict:
    """The record's nodes as kept: [last seen, last seq, node time, interval]; the interval learnt from this
    record and the one before: the seconds between the nodes' own times of their last readings over the
    sequence numbers between (a backlog sent in a burst keeps its times), or else between the times the gateway
    received them; kept from before when neither tells."""
    out = {}
    for d in h.devices:
        old = before.get(d.device_id)
        interval = old[3] if old and len(old) == 4 else None
        if old and d.last_seq > old[1]:
            steps = d.last_seq - old[1]
            if old[2] is not None and d.node_time is not None and d.node_time > old[2]:
                interval = (d.node_time - old[2]) / steps
            elif old[0] is not None and d.last_seen is not None and d.last_seen > old[0]:
                interval = (d.last_seen - old[0]) / steps
        out[d.device_id] = [d.last_seen, d.last_seq, d.node_time, interval]
    return out


def fair_share(amounts: list[int], budget: int) -> float:
    """The largest cap with sum(min(a, cap)) <= budget (max-min fairness); infinite when all fit."""
    if sum(amounts) <= budget:
        return float("inf")
    left = budget
    for i, a in enumerate(sorted(amounts)):
        share = left // (len(amounts) - i)
        if a > share:
            return share
        left -= a
    return float("inf")  # not reached: the largest amount is above the share of what is left


def _conflict(device_id: str, seq: int, held: StoredReading) -> Refusal:
    return Refusal("conflicting_reading", f"reading {device_id} #{seq} is here already with other contents (from "
                                          f"batch {batch_id(held.gateway_id, held.store_id, held.batch_seq)}): the "
                                          "device signed two readings with one sequence number (was its counter "
                                          "reset?)")


def _leaf_list(leaves: list[int]) -> str:
    return json.dumps(sorted(leaves), separators=(",", ":"))


