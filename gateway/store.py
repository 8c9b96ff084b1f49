"""The gateway's store: SQLite in WAL mode on the SD card.

Everything the gateway accepts is committed here before it is acknowledged to
anyone; everything it sends is read from here, and a cursor per destination
records what the destination has acknowledged. One connection, used by the
gateway's own thread; `govedge gateway status` opens the file read-only.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cbor2

from govedge.core.errors import raise_for_file

from .admit import SeqState

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,                 -- 'reading' or 'status'
    node_time INTEGER,                  -- the node's clock; NULL when it was not set
    received_at REAL NOT NULL,
    message BLOB NOT NULL,              -- the device-signed bytes, as received
    batch_seq INTEGER,                  -- NULL until batched
    clock_flag TEXT,                    -- 'clock_unsynced': node_time was ahead of a gateway clock not known
                                        -- to be synchronized (govedge.gateway.admit); NULL otherwise
    UNIQUE (device_id, seq)
);
CREATE INDEX IF NOT EXISTS readings_unbatched ON readings (id) WHERE batch_seq IS NULL;
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,         -- a sequence space: 'DEVICE KEYID' (one per key), or DEVICE (older stores)
    last_seq INTEGER NOT NULL,          -- the highest sequence number accepted
    gaps TEXT NOT NULL DEFAULT ''       -- 'a-b,c-d': numbers below it not accepted yet, still taken in
                                        -- (the replay window: govedge.gateway.admit.SeqState)
);
CREATE TABLE IF NOT EXISTS key_bounds (  -- learnt from the first reading under a device's active key
    device_id TEXT NOT NULL,
    key_id TEXT NOT NULL,               -- a retired or revoked key (govedge.core.registry.key_id)
    valid_below_seq INTEGER NOT NULL,   -- it is valid only for readings numbered below this
    PRIMARY KEY (device_id, key_id)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,               -- MQTT topic or serial port
    device_id TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    message BLOB NOT NULL,              -- the message as received, its first QUARANTINE_KEEP_BYTES bytes
    sender TEXT,                        -- whose share it counts against: the topic's device or the port
    sha256 BLOB,                        -- of the whole message
    size INTEGER                        -- of the whole message, in bytes
);
CREATE INDEX IF NOT EXISTS quarantine_code ON quarantine (code);  -- counted per code without reading messages
CREATE TABLE IF NOT EXISTS waiting_for_registry (  -- unknown_device: verified again after a registry reload
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,               -- MQTT topic or serial port
    sender TEXT NOT NULL,               -- whose share of the table it takes (govedge.gateway.admit.sender_of)
    message BLOB NOT NULL,              -- as received (a decodable message: at most 2048 bytes)
    sha256 BLOB NOT NULL UNIQUE         -- a message delivered again waits once
);
CREATE INDEX IF NOT EXISTS waiting_sender ON waiting_for_registry (sender);
CREATE TABLE IF NOT EXISTS held_back (
    id INTEGER PRIMARY KEY,
    reading_id INTEGER NOT NULL REFERENCES readings(id),
    name TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    held_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    cose BLOB NOT NULL,
    head BLOB                           -- the batch head an epoch tree commits to (govedge.core.proof)
);
CREATE TABLE IF NOT EXISTS epochs (
    number INTEGER PRIMARY KEY,
    first_batch INTEGER NOT NULL,
    last_batch INTEGER NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,                 -- RFC 9162 root over the batch heads: what is anchored
    heads BLOB NOT NULL,                -- CBOR array of the batch heads, in order
    closed_at REAL NOT NULL,
    receipt TEXT,                       -- the anchor receipt (JSON); NULL until the chain took it
    confirmed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT                          -- the last thing that went wrong while anchoring
);
-- the epochs still to anchor, found without reading the others (the metrics' scrape, the anchor stage)
CREATE INDEX IF NOT EXISTS epochs_unconfirmed ON epochs (number) WHERE confirmed = 0;
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,       -- 'hub': batches; 'hub-epochs': epoch records
    batch_seq INTEGER NOT NULL          -- every item up to this one is acknowledged
);
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT PRIMARY KEY,              -- 'batch': the next batch sequence number; 'store': the store's id
    next INTEGER NOT NULL               -- never goes back, whatever is pruned or dropped; the id never changes
);
CREATE TABLE IF NOT EXISTS drops (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    what TEXT NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


# a quarantined message is kept up to the size of the largest message the decoder accepts, so
# anything that could ever be a reading is kept whole; of larger garbage, the start, its size and hash
QUARANTINE_KEEP_BYTES = 2048
QUARANTINE_ROW_BYTES = 64  # what a row costs beyond its message, reason and source (accounting)
_QUARANTINE_BYTES = f"length(message) + length(reason) + length(source) + {QUARANTINE_ROW_BYTES}"


@dataclass(frozen=True)
class StoredReading:
    id: int
    device_id: str
    seq: int
    kind: str
    message: bytes


class BatchRow(NamedTuple):
    seq: int
    cose: bytes
    created_at: float


class BatchHead(NamedTuple):
    seq: int
    head: bytes  # what the epoch tree commits to (govedge.core.epoch.batch_head)
    created_at: float


class SignedBatch(NamedTuple):
    cose: bytes
    head: bytes | None  # None: a batch from before epochs


class LastEpoch(NamedTuple):
    number: int
    last_batch: int


class EpochOfBatch(NamedTuple):
    number: int
    heads: list[bytes]
    receipt: str | None  # JSON; None until the chain took it


class UnanchoredEpoch(NamedTuple):
    number: int
    root: bytes
    receipt: str | None  # JSON of a pending receipt; None until submitted


class AnchoredEpoch(NamedTuple):
    number: int
    first_batch: int
    last_batch: int
    heads: bytes  # CBOR array of the batch heads
    receipt: str  # JSON


class ReadingRow(NamedTuple):
    message: bytes
    batch_seq: int | None  # None until batched


class QuarantineUsage(NamedTuple):
    rows: int
    used: int  # bytes, as the quarantine's budget counts them


class Dropped(NamedTuple):
    batches: int
    readings: int


class Backlog(NamedTuple):
    """What waits in the store (the gateway's status record, govedge.gateway.heartbeat)."""

    unbatched: int  # readings waiting for a batch
    unconfirmed: int  # batches after the hub's cursor
    oldest_unconfirmed: float | None  # the oldest one's creation time
    unanchored: int  # epochs not confirmed on the chain
    oldest_unanchored: float | None  # the oldest one's close time
    anchor_error: str | None  # the last error of the oldest unanchored epoch that has one


class Store:
    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process; FULL also a power cut
            # before the next checkpoint, at the cost of one fsync per commit on the SD card
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            if "head" not in {row[1] for row in self.db.execute("PRAGMA table_info(batches)")}:
                self.db.execute("ALTER TABLE batches ADD COLUMN head BLOB")  # a store from before epochs
            if "gaps" not in {row[1] for row in self.db.execute("PRAGMA table_info(devices)")}:
                # a store from before the replay window: what it accepted counts as all below last_seq
                self.db.execute("ALTER TABLE devices ADD COLUMN gaps TEXT NOT NULL DEFAULT ''")
            if "clock_flag" not in {row[1] for row in self.db.execute("PRAGMA table_info(readings)")}:
                self.db.execute("ALTER TABLE readings ADD COLUMN clock_flag TEXT")  # a store from before the flag
            # the flagged readings counted by `govedge gateway status` without a pass over all readings
            self.db.execute("CREATE INDEX IF NOT EXISTS readings_clock_flag ON readings (id) "
                            "WHERE clock_flag IS NOT NULL")
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(quarantine)")}
            for column, kind in (("sender", "TEXT"), ("sha256", "BLOB"), ("size", "INTEGER")):
                if column not in columns:  # a store from before the quarantine had its budget
                    self.db.execute(f"ALTER TABLE quarantine ADD COLUMN {column} {kind}")
            self.db.execute("CREATE INDEX IF NOT EXISTS quarantine_sender ON quarantine (sender, id)")
            # the store's id: 8 random bytes (a signed 64-bit integer here), made by the first open of a store (new, or
            # from before store ids); two connections opening it together keep the first one's. The hub tells this
            # store's batches from those of a store this gateway lost (a replaced SD card) by it
            self.db.execute("INSERT OR IGNORE INTO sequences (name, next) VALUES ('store', ?)",
                            (int.from_bytes(secrets.token_bytes(8), "big", signed=True),))
            (n,) = self.db.execute("SELECT next FROM sequences WHERE name = 'store'").fetchone()
            self.store_id: str = n.to_bytes(8, "big", signed=True).hex()  # govedge.core.batch.STORE_ID
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise_for_file(exc, self.path)
            raise
        self._last_seq: dict[str, int] = {}  # devices.last_seq updates of the open transaction
        self._windows: dict[str, SeqState] = {}  # and their replay windows, where the checks gave them

    def close(self) -> None:
        self.db.close()

    # -- transactions ----------------------------------------------------------

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self._last_seq:  # one row per device per commit, not per reading
                # the replay window's gaps where the checks gave them (note_window), else the row's stay
                self.db.executemany(
                    "INSERT INTO devices (device_id, last_seq, gaps) VALUES (?1, ?2, coalesce(?3, '')) "
                    "ON CONFLICT(device_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), "
                    "gaps = coalesce(?3, gaps)",
                    [(space, last, w.text() if (w := self._windows.get(space)) else None)
                     for space, last in self._last_seq.items()])
        except BaseException:
            self.rollback()
            raise
        finally:
            self._last_seq.clear()
            self._windows.clear()
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.rollback()

    def rollback(self) -> None:
        """The open transaction undone; after SQLITE_FULL or an I/O error SQLite may have undone it itself."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # -- devices and readings ---------------------------------------------------

    def last_seq(self, device_id: str) -> int | None:
        if device_id in self._last_seq:
            return self._last_seq[device_id]
        row = self.db.execute("SELECT last_seq FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return row[0] if row else None

    def seq_state(self, space: str) -> SeqState | None:
        """The replay window of a sequence space (govedge.gateway.admit), as committed; None if never seen."""
        row = self.db.execute("SELECT last_seq, gaps FROM devices WHERE device_id = ?", (space,)).fetchone()
        return SeqState.parse(*row) if row else None

    def note_window(self, space: str, state: SeqState) -> None:
        """Inside a transaction: the sequence space's replay window as the checks left it, written at commit."""
        self._windows[space] = state  # its gaps written as text once, at the commit
        self._last_seq[space] = max(state.last, self._last_seq.get(space, -1))

    def add_reading(self, device_id: str, seq: int, kind: str, node_time, message: bytes,
                    space: str | None = None, clock_flag: str | None = None) -> int:
        """Inside a transaction (``with store:``): the last sequence number of the reading's sequence space
        (govedge.gateway.admit's Checks; the device's by default) is written at commit. ``clock_flag``:
        kept with the reading for an auditor ('clock_unsynced')."""
        cur = self.db.execute(
            "INSERT INTO readings (device_id, seq, kind, node_time, received_at, message, clock_flag) "
            "VALUES (?,?,?,?,?,?,?)",
            (device_id, seq, kind, node_time, time.time(), message, clock_flag),
        )
        space = space or device_id
        if seq > self._last_seq.get(space, -1):
            self._last_seq[space] = seq  # written with the commit
        return cur.lastrowid

    def key_bounds(self) -> dict[tuple[str, str], int]:
        return {(d, k): s for d, k, s in self.db.execute("SELECT device_id, key_id, valid_below_seq FROM key_bounds")}

    def learn_key_bound(self, device_id: str, key_id: str, seq: int) -> None:
        """Inside a transaction: a retired key of the device is valid only below ``seq`` (kept if known)."""
        self.db.execute("INSERT INTO key_bounds (device_id, key_id, valid_below_seq) VALUES (?,?,?) "
                        "ON CONFLICT DO NOTHING", (device_id, key_id, seq))

    def message_of(self, device_id: str, seq: int) -> bytes | None:
        """The stored signed bytes of a device's reading, if the gateway has it."""
        row = self.db.execute("SELECT message FROM readings WHERE device_id = ? AND seq = ?",
                              (device_id, seq)).fetchone()
        return row[0] if row else None

    def quarantine(self, source: str, device_id: str | None, code: str, reason: str, message: bytes,
                   sender: str | None = None) -> int:
        """Keeps a refused message (its first QUARANTINE_KEEP_BYTES) with the reason; returns the bytes it
        counts against the quarantine's budget."""
        message = bytes(message)
        kept = message[:QUARANTINE_KEEP_BYTES]
        self.db.execute(
            "INSERT INTO quarantine (received_at, source, device_id, code, reason, message, sender, sha256, size) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (time.time(), source, device_id, code, reason, kept, sender, hashlib.sha256(message).digest(),
             len(message)),
        )
        return len(kept) + len(reason.encode()) + len(source.encode()) + QUARANTINE_ROW_BYTES

    def wait_for_registry(self, source: str, sender: str, message: bytes, per_sender: int, total: int) -> bool:
        """Keeps a message of a device the registry does not know (yet); False when the sender has
        ``per_sender`` messages waiting or the table ``total``: nothing is kept then."""
        sha = hashlib.sha256(message).digest()
        if self.db.execute("SELECT 1 FROM waiting_for_registry WHERE sha256 = ?", (sha,)).fetchone():
            return True  # delivered again: it waits once
        if (self.db.execute("SELECT COUNT(*) FROM waiting_for_registry WHERE sender = ?", (sender,)).fetchone()[0]
                >= per_sender or self.db.execute("SELECT COUNT(*) FROM waiting_for_registry").fetchone()[0] >= total):
            return False
        self.db.execute("INSERT INTO waiting_for_registry (received_at, source, sender, message, sha256) "
                        "VALUES (?, ?, ?, ?, ?)", (time.time(), source, sender, message, sha))
        return True

    def waiting_for_registry(self) -> list[tuple[int, str, bytes]]:
        """(id, source, message) of the messages waiting for the registry, oldest first."""
        return [(i, src, bytes(m)) for i, src, m in
                self.db.execute("SELECT id, source, message FROM waiting_for_registry ORDER BY id")]

    def done_waiting(self, row_id: int) -> None:
        self.db.execute("DELETE FROM waiting_for_registry WHERE id = ?", (row_id,))

    def quarantined_whole(self, code: str) -> list[tuple[int, str, bytes]]:
        """(id, source, message) of the quarantined messages of a code that were kept whole, oldest first."""
        return [(i, src, bytes(m)) for i, src, m in self.db.execute(
            "SELECT id, source, message FROM quarantine WHERE code = ? AND size = length(message) ORDER BY id",
            (code,))]

    def forget_quarantined(self, row_id: int) -> None:
        """Inside a transaction: a quarantined message that is now stored as a reading."""
        self.db.execute("DELETE FROM quarantine WHERE id = ?", (row_id,))

    def quarantine_usage(self) -> QuarantineUsage:
        """Rows and bytes of the quarantine, as its budget counts them."""
        return QuarantineUsage._make(self.db.execute(
            f"SELECT count(*), coalesce(sum({_QUARANTINE_BYTES}), 0) FROM quarantine").fetchone())

    def trim_quarantine(self, max_bytes: int, max_rows: int) -> int:
        """Within its budget again: the sender with the most bytes (rows, when over the row budget)
        loses its oldest rows first, so one sender's garbage never pushes out another's evidence.
        Returns the rows deleted."""
        rows, used = self.quarantine_usage()
        pruned = 0
        while rows > max_rows or used > max_bytes:
            by = "count(*)" if rows > max_rows else f"sum({_QUARANTINE_BYTES})"
            sender, n, b = self.db.execute(
                f"SELECT sender, count(*), sum({_QUARANTINE_BYTES}) FROM quarantine GROUP BY sender "
                f"ORDER BY {by} DESC LIMIT 1").fetchone()
            excess = max(rows - max_rows, math.ceil((used - max_bytes) / (b / n)))
            take = max(1, min(n, excess, 1000))
            gone, freed = self.db.execute(
                f"SELECT count(*), sum({_QUARANTINE_BYTES}) FROM (SELECT * FROM quarantine WHERE sender IS ? "
                "ORDER BY id LIMIT ?)", (sender, take)).fetchone()
            self.db.execute("DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE sender IS ? "
                            "ORDER BY id LIMIT ?)", (sender, take))
            rows, used, pruned = rows - gone, used - freed, pruned + gone
        return pruned

    def hold_back(self, reading_id: int, name: str, rule: str, reason: str) -> None:
        self.db.execute(
            "INSERT INTO held_back (reading_id, name, rule, reason, held_at) VALUES (?,?,?,?,?)",
            (reading_id, name, rule, reason, time.time()),
        )

    def unbatched(self, limit: int) -> list[StoredReading]:
        rows = self.db.execute(
            "SELECT id, device_id, seq, kind, message FROM readings WHERE batch_seq IS NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [StoredReading(*r) for r in rows]

    def count_unbatched(self) -> int:
        return self.db.execute("SELECT count(*) FROM readings WHERE batch_seq IS NULL").fetchone()[0]

    # -- batches and cursors -------------------------------------------------------

    def next_batch_seq(self) -> int:
        """The next batch's sequence number: above every batch ever made, even one dropped or pruned
        since (a receiver drops a batch whose id it has seen)."""
        row = self.db.execute("SELECT next FROM sequences WHERE name = 'batch'").fetchone()
        if row is not None:
            return row[0]
        # a store from before the sequences table: above every batch it still knows of
        row = self.db.execute(
            "SELECT max(m) FROM (SELECT max(seq) AS m FROM batches UNION ALL SELECT max(last_batch) FROM epochs "
            "UNION ALL SELECT batch_seq FROM cursors WHERE destination = 'hub')").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def add_batch(self, seq: int, rows: list[StoredReading], root: bytes, cose: bytes, head: bytes) -> None:
        """Record a batch of the oldest unbatched readings, as ``unbatched`` returned them."""
        self.db.execute("INSERT INTO sequences (name, next) VALUES ('batch', ?) "
                        "ON CONFLICT (name) DO UPDATE SET next = max(next, excluded.next)", (seq + 1,))
        self.db.execute(
            "INSERT INTO batches (seq, created_at, size, root, cose, head) VALUES (?,?,?,?,?,?)",
            (seq, time.time(), len(rows), root, cose, head),
        )
        # one statement for the whole batch: the rows are all unbatched ones up to the last id
        marked = self.db.execute("UPDATE readings SET batch_seq = ? WHERE batch_seq IS NULL AND id <= ?",
                                 (seq, rows[-1].id)).rowcount
        if marked != len(rows):
            raise RuntimeError(f"batch {seq}: {len(rows)} readings given but {marked} unbatched up to "
                               f"id {rows[-1].id}; rows must be the oldest unbatched ones")

    def cursor(self, destination: str) -> int:
        """The last batch the destination acknowledged (-1: none yet)."""
        row = self.db.execute("SELECT batch_seq FROM cursors WHERE destination = ?", (destination,)).fetchone()
        return -1 if row is None else row[0]

    def advance(self, destination: str, batch_seq: int) -> None:
        self.db.execute(
            "INSERT INTO cursors (destination, batch_seq) VALUES (?, ?) "
            "ON CONFLICT(destination) DO UPDATE SET batch_seq = max(batch_seq, excluded.batch_seq)",
            (destination, batch_seq),
        )

    def batches_after(self, batch_seq: int, limit: int) -> list[BatchRow]:
        return list(map(BatchRow._make, self.db.execute(
            "SELECT seq, cose, created_at FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (batch_seq, limit))))

    # -- epochs ----------------------------------------------------------------------

    def last_epoch(self) -> LastEpoch | None:
        """The newest epoch, or None."""
        row = self.db.execute("SELECT number, last_batch FROM epochs ORDER BY number DESC LIMIT 1").fetchone()
        return None if row is None else LastEpoch._make(row)

    def batch_heads(self, first: int, last: int) -> list[BatchHead]:
        """The heads of the batches first..last that have one, in order."""
        return list(map(BatchHead._make, self.db.execute(
            "SELECT seq, head, created_at FROM batches WHERE seq BETWEEN ? AND ? AND head IS NOT NULL ORDER BY seq",
            (first, last))))

    def add_epoch(self, number: int, first: int, last: int, root: bytes, heads: list[bytes]) -> None:
        self.db.execute("INSERT INTO epochs (number, first_batch, last_batch, size, root, heads, closed_at) "
                        "VALUES (?,?,?,?,?,?,?)", (number, first, last, len(heads), root,
                                                   cbor2.dumps(heads), time.time()))

    def epoch_of_batch(self, batch_seq: int) -> EpochOfBatch | None:
        """The epoch holding the batch, or None."""
        row = self.db.execute("SELECT number, heads, receipt FROM epochs WHERE ? BETWEEN first_batch AND last_batch",
                              (batch_seq,)).fetchone()
        return None if row is None else EpochOfBatch(row[0], cbor2.loads(row[1]), row[2])

    def epochs_to_anchor(self, limit: int) -> list[UnanchoredEpoch]:
        """The epochs not confirmed on the chain yet, oldest first."""
        return list(map(UnanchoredEpoch._make, self.db.execute(
            "SELECT number, root, receipt FROM epochs WHERE confirmed = 0 ORDER BY number LIMIT ?", (limit,))))

    def set_receipt(self, number: int, receipt: str, confirmed: bool) -> None:
        self.db.execute("UPDATE epochs SET receipt = ?, confirmed = ?, error = NULL WHERE number = ?",
                        (receipt, int(confirmed), number))

    def confirmed_epochs_after(self, number: int, limit: int) -> list[AnchoredEpoch]:
        """The epochs after number the chain has confirmed, in order."""
        return list(map(AnchoredEpoch._make, self.db.execute(
            "SELECT number, first_batch, last_batch, heads, receipt FROM epochs "
            "WHERE confirmed = 1 AND number > ? ORDER BY number LIMIT ?", (number, limit))))

    def clear_receipt(self, number: int) -> None:
        self.db.execute("UPDATE epochs SET receipt = NULL, confirmed = 0 WHERE number = ?", (number,))

    def anchor_failed(self, number: int, error: str) -> None:
        self.db.execute("UPDATE epochs SET attempts = attempts + 1, error = ? WHERE number = ?", (error, number))

    def reading_row(self, device_id: str, seq: int) -> ReadingRow | None:
        """A stored reading's signed bytes and the batch it is in."""
        row = self.db.execute("SELECT message, batch_seq FROM readings WHERE device_id = ? AND seq = ?",
                              (device_id, seq)).fetchone()
        return None if row is None else ReadingRow._make(row)

    def batch_cose(self, seq: int) -> SignedBatch | None:
        """A batch's signed bytes and head."""
        row = self.db.execute("SELECT cose, head FROM batches WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else SignedBatch._make(row)

    def record_drop(self, what: str, count: int, reason: str) -> None:
        self.db.execute("INSERT INTO drops (at, what, count, reason) VALUES (?,?,?,?)",
                        (time.time(), what, count, reason))

    # -- status ----------------------------------------------------------------------

    def count_start(self) -> int:
        """Inside a transaction: one more start of the service on this store, and how many there were; the
        gateway's status records are numbered from it, so their numbers only grow within a store."""
        self.db.execute("INSERT INTO sequences (name, next) VALUES ('start', 1) "
                        "ON CONFLICT (name) DO UPDATE SET next = next + 1")
        return self.db.execute("SELECT next FROM sequences WHERE name = 'start'").fetchone()[0]

    def backlog(self, destination: str) -> Backlog:
        """What waits, from the indexes only: the unbatched readings (a partial index), the batches after the
        destination's cursor, the epochs not anchored; never a count over all readings."""
        unbatched = self.db.execute("SELECT count(*) FROM readings WHERE batch_seq IS NULL").fetchone()[0]
        batches = self.db.execute("SELECT count(*), min(created_at) FROM batches WHERE seq > ?",
                                  (self.cursor(destination),)).fetchone()
        epochs = self.db.execute("SELECT count(*), min(closed_at) FROM epochs WHERE confirmed = 0").fetchone()
        error = self.db.execute("SELECT error FROM epochs WHERE confirmed = 0 AND error IS NOT NULL "
                                "ORDER BY number LIMIT 1").fetchone()
        return Backlog(unbatched, *batches, *epochs, None if error is None else error[0])

    def devices_seen(self) -> list[tuple[str, float | None, int, float | None]]:
        """(device id, when its reading of the highest sequence number was received, that number, the node's time
        of it) of every device the store has accepted from; the times are None when that reading is gone
        (pruned), the node's when it had none. One index lookup per device."""
        last: dict[str, int] = {}
        for space, seq in self.db.execute("SELECT device_id, last_seq FROM devices"):
            device = space.split(" ")[0]  # a sequence space: 'DEVICE KEYID', or DEVICE in older stores
            last[device] = max(seq, last.get(device, -1))
        out = []
        for device, seq in last.items():
            row = self.db.execute("SELECT received_at, node_time FROM readings WHERE device_id = ? AND seq = ?",
                                  (device, seq)).fetchone() or (None, None)
            out.append((device, row[0], seq, row[1]))
        return out

    # -- quota ---------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the database in use for the store's quota (free pages are reused, so they do not
        count; nor does the quarantine, which has its own budget: garbage never crowds out readings)."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page - self._quarantine_pages_bytes()

    def wal_bytes(self) -> int:
        """The WAL and shm files beside gateway.db: disk the quota counts as well."""
        n = 0
        for suffix in ("-wal", "-shm"):
            try:
                n += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return n

    def spare_bytes(self) -> int:
        """Free pages inside gateway.db: room for new rows without growing the file."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        return self.db.execute("PRAGMA freelist_count").fetchone()[0] * page

    def checkpoint(self) -> bool:
        """The WAL copied into gateway.db and truncated, giving its space back; False when a reader (the
        uplink, the anchor stage) kept it from finishing."""
        busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def _quarantine_pages_bytes(self) -> int:
        try:  # SQLite's dbstat table: the pages the quarantine and its index take, exactly
            return self.db.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat "
                                   "WHERE name IN ('quarantine', 'quarantine_sender', 'quarantine_code')").fetchone()[0]
        except sqlite3.OperationalError:  # an SQLite built without dbstat: the budget's own count
            return self.quarantine_usage().used

    def prune_delivered(self, destination: str, older_than: float, limit: int) -> int:
        """Forget the oldest batches the destination acknowledged, with their readings."""
        rows = self.db.execute(
            "SELECT seq FROM batches WHERE seq <= ? AND created_at < ? ORDER BY seq LIMIT ?",
            (self.cursor(destination), older_than, limit)).fetchall()
        for (seq,) in rows:
            self._delete_batch(seq)
        return len(rows)

    def drop_oldest_unsent(self, destination: str, limit: int) -> Dropped:
        """Drop the oldest batches the destination does not have yet (else unbatched readings).

        Returns what was dropped; the caller records and counts it.
        """
        rows = self.db.execute("SELECT seq, size FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                               (self.cursor(destination), limit)).fetchall()
        if rows:
            for seq, _size in rows:
                self._delete_batch(seq)
            self.advance(destination, rows[-1][0])  # the cursor moves past what is gone
            return Dropped(len(rows), sum(size for _, size in rows))
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM readings WHERE batch_seq IS NULL ORDER BY id LIMIT ?", (limit * 100,)).fetchall()]
        self.db.executemany("DELETE FROM held_back WHERE reading_id = ?", [(i,) for i in ids])
        self.db.executemany("DELETE FROM readings WHERE id = ?", [(i,) for i in ids])
        return Dropped(0, len(ids))

    def forget_held_back(self, older_than: float) -> int:
        """The audit record of filtered values is kept for a configured time, then forgotten."""
        return self.db.execute("DELETE FROM held_back WHERE held_at < ?", (older_than,)).rowcount

    def drop_unsent_older_than(self, destination: str, older_than: float) -> int:
        """Readings not yet acknowledged by the destination and received before older_than (the age limit).

        Said in SQL, not as a list of ids: after a long outage that list outgrows SQLite's limit of
        variables in one statement."""
        seqs = [r[0] for r in self.db.execute(
            "SELECT DISTINCT batch_seq FROM readings WHERE received_at < ? AND batch_seq > ? ORDER BY batch_seq",
            (older_than, self.cursor(destination))).fetchall()]
        in_batches = 0
        for seq in seqs:  # a batch goes whole: its signature covers all of it
            in_batches += self.db.execute("SELECT count(*) FROM readings WHERE batch_seq = ?", (seq,)).fetchone()[0]
            self._delete_batch(seq)
        self.db.execute("DELETE FROM held_back WHERE reading_id IN "
                        "(SELECT id FROM readings WHERE received_at < ? AND batch_seq IS NULL)", (older_than,))
        unbatched = self.db.execute("DELETE FROM readings WHERE received_at < ? AND batch_seq IS NULL",
                                    (older_than,)).rowcount
        if seqs:
            self.advance(destination, max(seqs))
        return in_batches + unbatched

    def _delete_batch(self, seq: int) -> None:
        self.db.execute("DELETE FROM held_back WHERE reading_id IN (SELECT id FROM readings WHERE batch_seq = ?)",
                        (seq,))
        self.db.execute("DELETE FROM readings WHERE batch_seq = ?", (seq,))
        self.db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
