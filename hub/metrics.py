"""The hub worker's Prometheus endpoint (prometheus-client), on 127.0.0.1:``[metrics] port``.

Counters are this worker's, in memory since it started (several workers: sum them
in PromQL; a restart starts them at 0, which ``rate()`` takes in its stride); every
refusal code is exported from the start, at 0. The per-gateway gauges come from
the store's ``gateway_status`` table (one row per gateway: a scrape reads no
readings), so every worker of a store exports the same ones. Times are Unix
timestamps in the hub's clock: a gateway's own times are placed by when its
status record came (docs/FORMAT.md, "The gateway's status record").
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from govedge.core.config import ConfigError
from govedge.core.errors import text_of

from .status import hub_time
from .store import HubStore

# every code the hub refuses a delivery or a device message with (hub/README.md, the table of codes)
REJECTED_CODES = (
    "too_large", "not_cbor", "not_cose_sign1", "malformed_cose", "bad_header", "wrong_algorithm", "missing_field",
    "not_senml", "bad_sequence", "bad_time", "bad_record", "unknown_device", "bad_signature", "retired_key",
    "revoked_key", "conflicting_reading", "malformed_batch", "malformed_epoch", "malformed_heartbeat", "bad_root",
    "unknown_gateway", "wrong_topic", "conflicting_batch", "stale_heartbeat", "internal_error",
)

COUNTERS = {  # metric name (without _total) -> (the service's counter, help)
    "govedge_hub_batches_stored": ("batches", "batches this worker stored (not counting duplicates)"),
    "govedge_hub_readings_stored": ("readings", "device readings this worker stored"),
    "govedge_hub_duplicates": ("duplicates", "batches and epoch records this worker had already (a delivery again)"),
    "govedge_hub_heartbeats_stored": ("heartbeats", "gateway status records this worker kept as their gateway's "
                                                    "latest"),
}


class HubCollector:
    def __init__(self, hub, store: HubStore):
        self.hub = hub
        self.store = store
        self.lock = threading.Lock()  # one scrape at a time on the collector's own connection

    def collect(self):
        counters = self.hub.counters
        for name, (key, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=counters[key])
        rejected = CounterMetricFamily("govedge_hub_rejected", "deliveries and device messages this worker refused, "
                                       "by code (hub/README.md)", labels=["code"])
        codes = self.hub.rejected_codes
        for code in sorted({*REJECTED_CODES, *codes}):
            rejected.add_metric([code], codes[code])
        yield rejected
        with self.lock:
            rows = {r.gateway_id: r for r in self.store.gateway_statuses(devices=False)}
        heard = GaugeMetricFamily("govedge_hub_gateway_last_heard_timestamp_seconds", "when the hub last had a "
                                  "status record, a batch or an epoch record of the gateway (0: never)",
                                  labels=["gateway"])
        unconfirmed = GaugeMetricFamily("govedge_hub_gateway_unconfirmed_batches", "batches the gateway holds that "
                                        "the hub has not confirmed, by its latest status record", labels=["gateway"])
        oldest = GaugeMetricFamily("govedge_hub_gateway_oldest_unconfirmed_batch_timestamp_seconds", "when the "
                                   "oldest of them was made (absent: none)", labels=["gateway"])
        unanchored = GaugeMetricFamily("govedge_hub_gateway_epochs_unanchored", "epochs the gateway closed that the "
                                       "chain has not confirmed, by its latest status record", labels=["gateway"])
        free = GaugeMetricFamily("govedge_hub_gateway_store_free_bytes", "free space of the gateway's store, by its "
                                 "latest status record", labels=["gateway"])
        for gateway in sorted({*self.hub.gateways.doc["gateways"], *rows}):
            row = rows.get(gateway)
            times = [t for t in (row.received_at, row.last_batch_at) if t is not None] if row else []
            heard.add_metric([gateway], max(times, default=0))
            if row is None or row.state is None:
                continue
            s = row.state
            unconfirmed.add_metric([gateway], s["unconfirmed_batches"])
            if s["oldest_unconfirmed_batch"] is not None:
                oldest.add_metric([gateway], hub_time(s, row.received_at, s["oldest_unconfirmed_batch"]))
            unanchored.add_metric([gateway], s["epochs_unanchored"])
            free.add_metric([gateway], s["store_free_bytes"])
        yield from (heard, unconfirmed, oldest, unanchored, free)


class MetricsServer:
    def __init__(self, server, thread, store: HubStore):
        self.server, self.thread, self.store = server, thread, store

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()


def serve(hub, port: int) -> MetricsServer:
    """The endpoint on 127.0.0.1:``port``, with a store connection of its own; a port that cannot be had is a
    ConfigError naming it."""
    store = HubStore(hub.cfg.store, hub.cfg.rejected_keep_bytes, hub.cfg.synchronous)
    registry = CollectorRegistry()
    registry.register(HubCollector(hub, store))
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        store.close()
        raise ConfigError(f"[metrics] port {port}: cannot listen on 127.0.0.1:{port} ({text_of(exc)}); is another "
                          "hub worker or program on it? Give each worker on a host its own port") from None
    return MetricsServer(server, thread, store)
