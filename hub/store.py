"""The hub's store: SQLite by default, PostgreSQL when configured; the same tables in both.

    batches       one row per gateway batch (id = gateway id + sequence number), its signed bytes
    readings      one row per device message (device id + sequence number), its signed bytes
    measurements  the values of each reading, exactly as signed (value_text) and as a number
    aggregates    the gateway's window aggregates, per batch
    epochs        the gateways' anchored epochs: batch heads, root, anchor receipt
    rejected      batches the hub refused, with the reason and the bytes as received

A batch is stored in one transaction with its readings and aggregates; a
batch id seen before with the same bytes is a duplicate (a redelivery, or two
hub workers that both got it) and changes nothing. Sequence numbers are
stored as 64-bit signed integers: a node's counter would need centuries to
pass 2**63.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import cbor2

from govedge import wire
from govedge.batch import Batch

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
    PRIMARY KEY (gateway_id, seq)
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
    payload {BLOB} NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_time ON readings (time);
"""


class StoreError(RuntimeError):
    pass


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
    def __init__(self, url: str):
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - a dependency of the package
                raise StoreError(f"PostgreSQL needs the psycopg package: {exc}") from None
            try:
                self.db = psycopg.connect(url, autocommit=True)
            except psycopg.OperationalError as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {_redacted(url)}: {exc}") from None
            self.dialect = "postgresql"
        else:
            path = Path(url.removeprefix("sqlite://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.dialect = "sqlite"
        schema = "\n".join(line.split("--")[0] for line in SCHEMA.format(**TYPES[self.dialect]).splitlines())
        with self.transaction():  # hub workers starting together create the tables once
            if self.dialect == "postgresql":
                self._exec("SELECT pg_advisory_xact_lock(7243001)")
            for statement in schema.split(";"):
                if statement.strip():
                    self._exec(statement)

    def _exec(self, sql: str, args: tuple = ()):
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.db.execute(sql, args)

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

    # -- inside a transaction ----------------------------------------------------------

    def add_batch(self, b: Batch, readings: list[wire.Reading] | None = None) -> bool:
        """Stores the batch with its readings and aggregates; False if it was here already.

        ``readings``: the batch's device messages, decoded (and verified) already, in order.

        Raises StoreError when another batch with the same id is here (a gateway whose
        sequence numbers went back: its store was lost), leaving the first one as it is.
        """
        inserted = self._exec(
            "INSERT INTO batches (gateway_id, seq, created, received_at, mode, size, root, cose) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (gateway_id, seq) DO NOTHING",
            (b.gateway_id, b.seq, b.created, time.time(), b.mode, b.size, b.root, b.cose)).rowcount
        if not inserted:
            row = self._exec("SELECT cose FROM batches WHERE gateway_id = ? AND seq = ?",
                             (b.gateway_id, b.seq)).fetchone()
            if bytes(row[0]) != b.cose:
                raise StoreError(f"batch {b.id} is here already with other contents: the gateway's "
                                 "sequence numbers went back (was its store lost?)")
            return False
        if readings is None:
            readings = [wire.decode(m) for m in b.messages]
        for leaf, (message, r) in enumerate(zip(b.messages, readings, strict=True)):
            if not self._exec(
                    "INSERT INTO readings (device_id, seq, time, gateway_id, batch_seq, leaf, message) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (device_id, seq) DO NOTHING",
                    (r.device_id, r.seq, r.time, b.gateway_id, b.seq, leaf, message)).rowcount:
                continue  # in an earlier batch already (a gateway that sent it twice): kept once
            for pos, m in enumerate(r.measurements):
                self._exec("INSERT INTO measurements (device_id, seq, name, pos, unit, value, value_text) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (r.device_id, r.seq, m.name, pos, m.unit, _number(m.value), value_text(m.value)))
        for a in b.aggregates:
            self._exec(
                "INSERT INTO aggregates (gateway_id, batch_seq, device_id, name, unit, window_start, window_end, "
                "count, min, max, mean, stdev, last, first_seq, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                (b.gateway_id, b.seq, a["device_id"], a["name"], a.get("unit"), a["window_start"],
                 a["window_end"], a["count"], a["min"], a["max"], a["mean"], a["stdev"], a["last"],
                 a["first_seq"], a["last_seq"]))
        return True

    def add_epoch(self, rec) -> bool:
        """Stores a verified epoch record (govedge.proof.EpochRecord); False if it was here already."""
        return bool(self._exec(
            "INSERT INTO epochs (gateway_id, number, first_batch, last_batch, size, root, heads, receipt, cose) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (gateway_id, number) DO NOTHING",
            (rec.epoch.gateway_id, rec.epoch.number, rec.first, rec.last, len(rec.epoch.heads), rec.epoch.root,
             cbor2.dumps(list(rec.epoch.heads)), json.dumps(rec.receipt.to_json(), sort_keys=True), rec.cose)).rowcount)

    def reading_of(self, device_id: str, seq: int) -> tuple[bytes, str, int] | None:
        """(message, gateway id, batch seq) of a stored reading."""
        row = self._exec("SELECT message, gateway_id, batch_seq FROM readings WHERE device_id = ? AND seq = ?",
                         (device_id, seq)).fetchone()
        return None if row is None else (bytes(row[0]), row[1], row[2])

    def batch_bytes(self, gateway_id: str, seq: int) -> bytes | None:
        row = self._exec("SELECT cose FROM batches WHERE gateway_id = ? AND seq = ?", (gateway_id, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def epoch_of(self, gateway_id: str, batch_seq: int) -> tuple[int, list[bytes], str] | None:
        """(number, heads, receipt JSON) of the gateway's epoch holding the batch."""
        row = self._exec("SELECT number, heads, receipt FROM epochs WHERE gateway_id = ? AND ? BETWEEN first_batch "
                         "AND last_batch", (gateway_id, batch_seq)).fetchone()
        return None if row is None else (row[0], cbor2.loads(bytes(row[1])), row[2])

    def reject(self, topic: str, gateway_id: str | None, code: str, reason: str, payload: bytes) -> None:
        self._exec("INSERT INTO rejected (received_at, topic, gateway_id, code, reason, payload) "
                   "VALUES (?,?,?,?,?,?)", (time.time(), topic, gateway_id, code, reason, bytes(payload)))

    # -- reading ------------------------------------------------------------------------

    def count(self, table: str) -> int:
        assert table in ("batches", "readings", "measurements", "aggregates", "epochs", "rejected")
        return self._exec(f"SELECT count(*) FROM {table}").fetchone()[0]

    def batches_in_epochs(self) -> int:
        """How many batches the stored epochs cover."""
        return self._exec("SELECT coalesce(sum(size), 0) FROM epochs").fetchone()[0]

    def reading_ids(self) -> set[tuple[str, int]]:
        return {(d, s) for d, s in self._exec("SELECT device_id, seq FROM readings").fetchall()}

    def rejections(self) -> list[tuple[str, str]]:
        return [(c, r) for c, r in self._exec("SELECT code, reason FROM rejected ORDER BY id").fetchall()]

    def export_rows(self, since: float | None = None, until: float | None = None) -> Iterator[ExportRow]:
        """Readings in (device id, sequence number) order; the window applies to the node's time,
        or to the batch's creation time for readings of a node whose clock was not set."""
        order = 'r.device_id COLLATE "C", r.seq' if self.dialect == "postgresql" else "r.device_id, r.seq"
        when = "coalesce(r.time, b.created)"
        sql = ("SELECT r.device_id, r.seq, r.time, r.gateway_id, r.batch_seq, r.message, b.created, "
               "m.name, m.unit, m.value_text "
               "FROM readings r JOIN batches b ON b.gateway_id = r.gateway_id AND b.seq = r.batch_seq "
               "JOIN measurements m ON m.device_id = r.device_id AND m.seq = r.seq "
               f"WHERE (? IS NULL OR {when} >= ?) AND (? IS NULL OR {when} < ?) ORDER BY {order}, m.pos")
        if self.dialect == "postgresql":
            sql = sql.replace("? IS NULL", "?::double precision IS NULL")
        head, values = None, []
        for device_id, seq, t, gateway_id, batch_seq, message, created, name, unit, text in \
                self._exec(sql, (since, since, until, until)):
            if head is not None and (device_id, seq) != head[:2]:
                yield ExportRow(*head, tuple(values))
                values = []
            head = (device_id, seq, t, gateway_id, batch_seq, bytes(message), created)
            values.append((name, unit, text))
        if head is not None:
            yield ExportRow(*head, tuple(values))


def _redacted(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        cred, host = rest.split("@", 1)
        return f"{scheme}//{cred.split(':', 1)[0]}:***@{host}"
    return url
