"""The gateway's Prometheus endpoint (prometheus-client), on localhost."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .health import snapshot
from .supervise import FAULTS

_COUNTERS = {
    "received": "messages taken from the local broker and serial lines",
    "verified": "readings and status records whose signature and sequence number checked out",
    "quarantined": "messages refused and kept in the quarantine table with their reason",
    "quarantine_pruned": "quarantine rows deleted to keep the quarantine within its own budget "
                         "(the sender with the most loses its oldest first)",
    "clock_unsynced": "readings stored and flagged because they were timed ahead of a gateway clock not known "
                      "to be synchronized (govedge.gateway.clocksync)",
    "duplicates": "messages received again that the gateway already had (a node's resend)",
    "node_acks": "acknowledgements published to nodes after a commit (one per node and commit)",
    "condense_faults": "readings stored whose filtering or aggregation raised (logged; the reading is batched)",
    "batches": "batches built and signed",
    "batches_delivered": "batches the hub confirmed it committed (or kept as refused): the gateway may forget them",
    "sent_again": "batches and epoch records sent to the hub again, not confirmed within [hub] confirm_timeout_s",
    "dropped": "unsent readings dropped because the store reached its quota (policy drop_oldest)",
    "epochs": "epochs closed (their roots are anchored on the govchain)",
    "epochs_anchored": "epochs the govchain confirmed",
}

SUPERVISED = ("uplink", "anchor", "ingest_callback", "uplink_callback", "housekeeping")  # always exported


class GatewayCollector:
    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self):
        c = self.gateway.counters
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"govedge_{name}", doc, value=c[name])
        held = CounterMetricFamily("govedge_held_back", "values held back by the filters", labels=["rule"])
        refused = CounterMetricFamily("govedge_quarantined_by_reason", "quarantined messages", labels=["code"])
        faults = CounterMetricFamily("govedge_part_faults", "unexpected exceptions caught in a supervised part "
                                     "(logged; uplink and anchor restart with backoff, a callback or housekeeping "
                                     "pass ends there and the next one runs)", labels=["part"])
        for part in SUPERVISED:
            faults.add_metric([part], c[FAULTS + part])
        for key, value in c.items():
            if key.startswith(FAULTS):
                if key[len(FAULTS):] not in SUPERVISED:
                    faults.add_metric([key[len(FAULTS):]], value)
            elif key.startswith("held_back_"):
                held.add_metric([key[len("held_back_"):]], value)
            elif key.startswith("quarantined_"):
                refused.add_metric([key[len("quarantined_"):]], value)
        yield held
        yield refused
        yield faults
        s = snapshot(self.gateway.db_path)
        yield GaugeMetricFamily("govedge_queue_readings", "readings waiting for a batch", value=s["unbatched"])
        yield GaugeMetricFamily("govedge_queue_batches", "batches the hub has not acknowledged",
                                value=s["batches_unsent"])
        yield GaugeMetricFamily("govedge_oldest_unsent_batch_age_seconds", "age of the oldest unsent batch",
                                value=s["oldest_unsent_batch_age_s"])
        yield GaugeMetricFamily("govedge_epochs_unanchored", "closed epochs the govchain has not confirmed yet",
                                value=s["epochs_unanchored"])
        yield GaugeMetricFamily("govedge_oldest_unanchored_epoch_age_seconds", "age of the oldest unanchored epoch",
                                value=s["oldest_unanchored_epoch_age_s"])
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


def serve(gateway, port: int):
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return start_http_server(port, addr="127.0.0.1", registry=registry)
