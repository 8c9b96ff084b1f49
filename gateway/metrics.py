"""The gateway's Prometheus endpoint (prometheus-client), on localhost (gateway/README.md, "Prometheus metrics").

Names follow Prometheus' conventions: counters end in ``_total``, units are in the
name (``_bytes``, ``_seconds``), and a moment is a timestamp in seconds since
1970 (``..._timestamp_seconds``; 0 while there is none), so that an alert rule
computes an age with ``time() - x`` on the Prometheus server's clock. Every
labelled series exists from the first scrape at 0: each quarantine code the
gateway can give, each filter rule, each supervised part, each anchoring error
(``QUARANTINE_CODES``, ``filter.RULES``, ``SUPERVISED``, ``ANCHOR_ERRORS``), so
``rate()`` and ``increase()`` see the first event.

A scrape is cheap on a store of millions of readings: the counters and the
readings waiting for a batch are the service's own, in memory; what comes from
gateway.db are lookups on an index (the hub's cursor, the oldest unsent batch,
the newest reading, the epochs not yet confirmed), never a count over the
readings or the quarantine. ``govedge bench gateway`` reports what one scrape
costs (``scrape_ms``), and what its lookups cost on a million readings.
"""

from __future__ import annotations

import sqlite3
from importlib import metadata

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from govedge.core import registry, wire
from govedge.core.errors import INTERNAL_ERROR

from .aggregate import NotAggregated
from .filter import RULES
from .supervise import FAULTS

# counters[name] -> govedge_<name>_total
COUNTERS = {
    "received": "messages taken from the local broker and serial lines",
    "verified": "readings and status records whose signature and sequence number checked out, stored",
    "duplicates": "messages received again that the gateway already had (a node's resend)",
    "quarantine_pruned": "quarantine rows deleted to keep the quarantine within its own budget "
                         "(the sender with the most loses its oldest first)",
    "clock_unsynced": "readings stored and flagged because they were timed ahead of a gateway clock not known "
                      "to be synchronized (govedge.gateway.clocksync)",
    "waiting_for_registry": "messages of a device the registry does not know, kept to be verified again after "
                            "the next registry reload",
    "waiting_for_registry_full": "messages of an unknown device quarantined (unknown_device) because its sender's "
                                 "share of the waiting messages, or the whole table, was full",
    "registry_reloads": "registry files loaded again (SIGHUP or a change of the file)",
    "registry_reload_failures": "registry files that did not load; the registry before stays in force",
    "node_acks": "acknowledgements published to nodes after a commit (one per node and commit)",
    "condense_faults": "readings stored whose filtering or aggregation raised (logged; the reading is batched)",
    "batches": "batches built and signed",
    "batches_delivered": "batches the hub confirmed it committed (or kept as refused): the gateway may forget them",
    "epochs_delivered": "epoch records the hub confirmed",
    "sent_again": "batches and epoch records sent to the hub again, not confirmed within [hub] confirm_timeout_s",
    "heartbeats": "signed status records sent to the hub ([hub] heartbeat_s)",
    "heartbeat_faults": "status records that could not be built or sent (logged; batches go on)",
    "dropped": "unsent readings dropped because the store reached its quota or age limit (policy drop_oldest)",
    "pruned_for_room": "batches the hub has, pruned early because the disk was short of its reserve",
    "epochs": "epochs closed (their roots are anchored on the govchain)",
    "epochs_anchored": "epochs the govchain confirmed",
    "serial_frames": "frames read from serial lines whose checksum held",
    "serial_bad_crc": "serial frames dropped for a wrong CRC",
    "serial_bad_cobs": "serial frames dropped for a broken COBS encoding",
    "serial_too_long": "serial frames dropped for being longer than any message",
    "serial_bytes_discarded": "bytes of serial lines thrown away outside any frame",
    "serial_bad_kind": "serial frames of a kind the gateway does not take",
    "serial_port_errors": "errors of a serial port (unplugged, refused); the port is opened again",
    "serial_ingest_faults": "unexpected exceptions in a serial line's reader (logged; the reader goes on)",
    "serial_acks_unsent": "answers to a serial node that could not be written (it sends the message again)",
}

# Every code a quarantine row can carry: the refusals of decoding and verifying a reading
# (govedge.core.cose, govedge.core.wire), of a key's lifecycle (govedge.core.registry), of the
# admit stage (govedge.gateway.admit) and of the service (internal_error). A test reads them
# out of the source, so a new code cannot be left out.
QUARANTINE_CODES = (
    # the envelope (core.cose.decode_envelope, check_signature)
    "too_large", "not_cbor", "not_cose_sign1", "malformed_cose", "bad_header", "missing_field", "wrong_algorithm",
    wire.DEVICE_SIGNER.unknown_code, "bad_signature",
    # the SenML payload (core.wire)
    "not_senml", "bad_sequence", "bad_time", "bad_record",
    # a retired or revoked key (core.registry.KeyRule.refusal)
    *(f"{status}_key" for status in registry.STATUSES if status != "active"),
    # the admit stage (gateway.admit)
    "over_share", "wrong_topic", "time_before_floor", "future_time", "replayed", "seq_jump",
    "conflicting_reading",
    # whatever handling a message raised, or the message a process died on (core.errors, core.crashguard)
    INTERNAL_ERROR,
)

# the parts whose unexpected exceptions are counted (govedge.gateway.supervise)
SUPERVISED = ("uplink", "anchor", "ingest_callback", "uplink_callback", "housekeeping")

# govedge.core.receipt.AnchorError's codes: try again later, the chain refused, the chain holds another root
ANCHOR_ERRORS = ("unreachable", "rejected", "mismatch")


def not_aggregated_codes() -> tuple[str, ...]:
    """The codes of NotAggregated and its subclasses (govedge.gateway.aggregate)."""
    seen, todo = [], [NotAggregated]
    while todo:
        cls = todo.pop(0)
        if cls.code not in seen:
            seen.append(cls.code)
        todo.extend(cls.__subclasses__())
    return tuple(seen)


# counters[prefix + label] -> govedge_<family>_total{label=...}: family, label, the labels always there, help
LABELLED = (
    ("quarantined_", "quarantined", "code", QUARANTINE_CODES,
     "messages refused and kept in the quarantine table, by the code of their reason"),
    ("held_back_", "held_back", "rule", RULES, "measurement values held back by the filters, by rule"),
    (FAULTS, "part_faults", "part", SUPERVISED,
     "unexpected exceptions caught in a supervised part (logged; uplink and anchor restart with backoff, a "
     "callback or housekeeping pass ends there and the next one runs)"),
    ("anchor_errors_", "anchor_errors", "code", ANCHOR_ERRORS,
     "failed attempts to anchor an epoch, by kind (unreachable: tried again later)"),
    ("not_aggregated_", "not_aggregated", "code", not_aggregated_codes(),
     "measurements stored and batched but left out of the aggregates, by reason"),
)


def _version() -> str:
    try:
        return metadata.version("govchain-edge")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class GatewayCollector:
    """Collects the gateway's metrics on every scrape (prometheus-client calls ``collect`` in its server's
    thread): the service's counters, its in-memory state and a few indexed lookups in gateway.db."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.version = _version()
        self.last_reading_at = 0.0  # kept: the quota may prune the newest reading once the hub has it

    def collect(self):
        c = self.gateway.counters
        info = GaugeMetricFamily("govedge_build_info", "the gateway's software version (always 1)",
                                 labels=["version"])
        info.add_metric([self.version], 1)
        yield info
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(f"govedge_{name}", doc, value=c[name])
        for prefix, family, label, always, doc in LABELLED:
            metric = CounterMetricFamily(f"govedge_{family}", doc, labels=[label])
            values = dict.fromkeys(always, 0)
            for key, value in list(c.items()):
                if key.startswith(prefix):  # a code nobody listed is exported all the same
                    values[key[len(prefix):]] = value
            for value_label, value in values.items():
                metric.add_metric([value_label], value)
            yield metric
        yield from self._store_gauges()
        synced = self.gateway.clock.synchronized()
        yield GaugeMetricFamily("govedge_clock_synchronized", "1 while the gateway's clock is synchronized (NTP), "
                                "0 while it is not, -1 while nobody can tell",
                                value=-1 if synced is None else int(synced))
        yield GaugeMetricFamily("govedge_uplink_connected", "1 while connected to the hub's broker",
                                value=1 if self.gateway.uplink.connected.is_set() else 0)
        room = self.gateway.room
        yield GaugeMetricFamily("govedge_store_free_bytes", "free space of the file system of the data_dir",
                                value=room.look())
        yield GaugeMetricFamily("govedge_store_reserve_bytes", "free space below which nothing is acknowledged "
                                "([store] min_free_mb)", value=room.reserve)
        yield GaugeMetricFamily("govedge_store_file_bytes", "gateway.db with its WAL and shm, on disk",
                                value=self.gateway.db_path.stat().st_size + self.gateway.store.wal_bytes())
        yield GaugeMetricFamily("govedge_store_refusing", "1 while the gateway acknowledges nothing: disk short "
                                "of its reserve, a commit failed for want of room, or the quota full under "
                                "policy refuse_new", value=1 if room.cause is not None or self.gateway.quota.refusing
                                else 0)

    def _store_gauges(self):
        """The backlog, from the batcher's count and indexed lookups on a read-only connection of this
        scrape's own (the service's connection belongs to its main thread)."""
        found = lookups(self.gateway.db_path)
        self.last_reading_at = max(self.last_reading_at, found["last_reading_at"])
        yield GaugeMetricFamily("govedge_queue_readings", "readings stored, waiting for a batch",
                                value=self.gateway.batcher.waiting)
        yield GaugeMetricFamily("govedge_queue_batches", "batches the hub has not confirmed yet",
                                value=found["batches_unsent"])
        yield GaugeMetricFamily("govedge_oldest_unsent_batch_timestamp_seconds", "when the oldest batch the hub "
                                "has not confirmed was built (seconds since 1970; 0: none waits)",
                                value=found["oldest_unsent_batch_at"])
        yield GaugeMetricFamily("govedge_epochs_unanchored", "closed epochs the govchain has not confirmed yet",
                                value=found["epochs_unanchored"])
        yield GaugeMetricFamily("govedge_oldest_unanchored_epoch_timestamp_seconds", "when the oldest epoch the "
                                "govchain has not confirmed was closed (seconds since 1970; 0: none waits)",
                                value=found["oldest_unanchored_epoch_at"])
        yield GaugeMetricFamily("govedge_last_reading_timestamp_seconds", "when the newest reading or status "
                                "record was stored (seconds since 1970, the gateway's clock; 0: none in the store "
                                "and none since the service started)", value=self.last_reading_at)


def lookups(db_path) -> dict:
    """What the gauges need from gateway.db (``lookups_in``), read-only, in a connection of its own."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return lookups_in(db)
    finally:
        db.close()


def lookups_in(db: sqlite3.Connection) -> dict:
    """The hub's cursor, the batches after it, the oldest of them, the epochs not confirmed and the newest
    reading: each a lookup on an index (the readings' and batches' integer keys, the unconfirmed epochs'
    partial index), as cheap on a million readings as on ten."""
    q = lambda sql, *a: db.execute(sql, a).fetchone()  # noqa: E731
    cursor = q("SELECT batch_seq FROM cursors WHERE destination = 'hub'")
    acked = -1 if cursor is None else cursor[0]
    oldest = q("SELECT created_at FROM batches WHERE seq > ? ORDER BY seq LIMIT 1", acked)
    epochs = q("SELECT count(*), min(closed_at) FROM epochs WHERE confirmed = 0")
    last = q("SELECT received_at FROM readings ORDER BY id DESC LIMIT 1")
    return {
        # a range of the batches' integer key: as long as the hub's backlog, never the readings
        "batches_unsent": q("SELECT count(*) FROM batches WHERE seq > ?", acked)[0],
        "oldest_unsent_batch_at": oldest[0] if oldest else 0.0,
        "epochs_unanchored": epochs[0],
        "oldest_unanchored_epoch_at": epochs[1] or 0.0,
        "last_reading_at": last[0] if last else 0.0,
    }


def serve(gateway, port: int):
    """Starts the endpoint on 127.0.0.1:``port``; returns (server, thread) to shut it down with."""
    registry_ = CollectorRegistry()
    registry_.register(GatewayCollector(gateway))
    return start_http_server(port, addr="127.0.0.1", registry=registry_)
