"""The batch stage: stored readings into signed batches, batches into epochs.

A batch (govedge.core.batch) is made at most every ``[batch] interval_s``, or as
soon as ``max_readings`` wait: the readings in the order they were stored, their
RFC 9162 Merkle root and the closed aggregate windows, signed by the gateway's
key; building it and marking its readings is one transaction. An epoch closes
``[anchor] epoch_s`` after its first batch, on request and when the service stops:
an RFC 9162 root over its batch heads, which the anchor stage hands to the chain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

from govedge.core import batch, epoch

from .aggregate import Aggregate
from .config import GatewayConfig
from .store import Store

log = logging.getLogger("govedge.gateway")


class Batcher:
    """``waiting`` and ``aggregates`` are this stage's input: the readings committed since the last
    batch are counted in ``waiting``, the windows the aggregate stage closed go into ``aggregates``."""

    def __init__(self, cfg: GatewayConfig, store: Store, key, counters: Counter,
                 on_batch: Callable[[], None] = lambda: None, on_epoch: Callable[[], None] = lambda: None):
        self.cfg = cfg
        self.store = store
        self.key = key  # signs the batches
        self.counters = counters
        self.on_batch = on_batch  # a batch waits for the uplink
        self.on_epoch = on_epoch  # an epoch waits for the anchor stage
        self.aggregates: list[Aggregate] = []  # closed windows waiting for the next batch
        self.waiting = store.count_unbatched()  # readings stored but not yet in a batch
        self.last_batch_at = time.monotonic()
        self.close_requested = threading.Event()

    def recount(self) -> None:
        """The readings waiting, counted again in the store (the quota may have dropped some)."""
        self.waiting = self.store.count_unbatched()

    def maybe_batch(self, force: bool = False) -> int | None:
        waiting = self.waiting
        due = time.monotonic() - self.last_batch_at >= self.cfg.batch_interval_s
        if not waiting or not (force or due or waiting >= self.cfg.batch_max_readings):
            return None
        rows = self.store.unbatched(self.cfg.batch_max_readings)
        if not rows:
            self.waiting = 0
            return None
        seq = self.store.next_batch_seq()
        aggregates = [a.to_cbor_map() for a in self.aggregates]
        created = int(time.time())
        cose, root = batch.sign(self.key, self.cfg.gateway_id, seq, created, [r.message for r in rows], aggregates,
                                self.cfg.batch_mode, self.store.store_id)
        head = epoch.batch_head(self.cfg.gateway_id, seq, created, self.cfg.batch_mode, len(rows), root,
                                self.store.store_id)
        with self.store:
            self.store.add_batch(seq, rows, root, cose, head)
        self.aggregates.clear()
        self.waiting -= len(rows)
        self.last_batch_at = time.monotonic()
        self.counters["batches"] += 1
        self.on_batch()
        log.info("batch %s/%d: %d readings, root %s", self.cfg.gateway_id, seq, len(rows), root.hex()[:16])
        return seq

    def maybe_close_epoch(self, force: bool = False) -> int | None:
        """Close the open epoch (the batches since the last one) once it is epoch_s old; its root is anchored."""
        last = self.store.last_epoch()
        number, first = (0, 0) if last is None else (last.number + 1, last.last_batch + 1)
        heads = self.store.batch_heads(first, self.store.next_batch_seq() - 1)
        if not heads or not (force or time.time() - heads[0].created_at >= self.cfg.epoch_s):
            return None
        root = epoch.epoch_root([h.head for h in heads])
        with self.store:
            self.store.add_epoch(number, first, heads[-1].seq, root, [h.head for h in heads])
        self.counters["epochs"] += 1
        self.on_epoch()
        log.info("epoch %s/%d: batches %d..%d, root %s", self.cfg.gateway_id, number, first, heads[-1].seq,
                 root.hex()[:16])
        return number

    def request_epoch_close(self) -> None:
        """Batch what waits and close the epoch now, from any thread (its anchoring follows)."""
        self.close_requested.set()

    def close_if_requested(self) -> None:
        """On the service's thread: what request_epoch_close asked for."""
        if self.close_requested.is_set():
            self.close_requested.clear()
            self.maybe_batch(force=True)
            self.maybe_close_epoch(force=True)
