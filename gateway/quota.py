"""The store's quota and the quarantine's budget (gateway/README.md, "store").

The quota (``[store] max_bytes``, ``max_age_days``) prunes what the destination
has acknowledged first; when unsent data alone fills it, or is older than
``max_age_days``, ``policy = "drop_oldest"`` drops the oldest unsent readings (a
batch always whole), each drop recorded and counted, and ``policy =
"refuse_new"`` stops taking messages until the destination has caught up. The
quota counts gateway.db's pages in use and its WAL and shm files. The
quarantine has a budget of its own (``quarantine_max_bytes``,
``quarantine_max_rows``): the sender with the most loses its oldest rows first.
The disk's own free space has a reserve (``min_free_mb``, govedge.gateway.room):
below it nothing is acknowledged, and ``make_room`` frees what may be freed
before the next commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from .config import GatewayConfig
from .room import Room, disk_fault
from .store import Store

log = logging.getLogger("govedge.gateway")


class Quota:
    def __init__(self, cfg: GatewayConfig, store: Store, counters: Counter, destination: str,
                 on_state: Callable[[str, bool], None] = lambda state, ok: None):
        """``destination``: whose cursor says what was delivered (the uplink's)."""
        self.cfg = cfg
        self.store = store
        self.counters = counters
        self.destination = destination
        self.on_state = on_state
        self.refusing = False  # the store is full and the policy is refuse_new
        self.quarantined_bytes = 0  # added to the quarantine since its budget was last enforced
        self.room_made_at = -1e9
        self.room = Room(cfg.data_dir, cfg.store_min_free_bytes, store.spare_bytes, self.tell_state)

    def used_bytes(self) -> int:
        """What the quota counts: the store's pages in use (not the quarantine's) and its WAL and shm."""
        return self.store.used_bytes() + self.store.wal_bytes()

    def make_room(self) -> None:
        """Room before the next commit, when the disk is short of its reserve or a commit failed for want
        of it: the WAL's space given back (a checkpoint), the quarantine within its budget, delivered
        readings pruned, oldest first, while room is short, then the quota as on every pass. Unsent
        readings are dropped only by the quota's policy, for the store's own size: a disk filled by
        something else is waited out, not paid for with data the hub has not got. A step that finds no
        room either is left for the next call."""
        if time.monotonic() - self.room_made_at < self.room.retry_s:
            return  # at most once per retry: each pass writes (and fsyncs) the SD card
        self.room_made_at = time.monotonic()
        store = self.store
        try:
            store.checkpoint()
            self.keep_quarantine_within_budget()
            while self.room.short():
                with store:
                    pruned = store.prune_delivered(self.destination, time.time(), 50)
                if not pruned:
                    break
                self.counters["pruned_for_room"] += pruned
                log.warning("store: disk short of its reserve: the %d oldest batches the hub has were pruned",
                            pruned)
            self.keep_within_quota()
            store.checkpoint()
        except Exception as exc:  # noqa: BLE001 - only a full disk is expected here
            store.rollback()
            if not disk_fault(exc):
                raise
            log.debug("store: making room failed for want of room: %s", exc)

    def quarantine_due(self) -> bool:
        """An eighth of the quarantine's budget came in since it was last enforced."""
        return self.quarantined_bytes > self.cfg.quarantine_max_bytes // 8

    def keep_quarantine_within_budget(self) -> None:
        """The quarantine's own budget (bytes and rows): the sender with the most loses its oldest first."""
        with self.store:
            pruned = self.store.trim_quarantine(self.cfg.quarantine_max_bytes, self.cfg.quarantine_max_rows)
            if pruned:
                self.store.record_drop("quarantine", pruned, f"quarantine over its budget of "
                                       f"{self.cfg.quarantine_max_bytes} bytes or {self.cfg.quarantine_max_rows} rows")
        self.quarantined_bytes = 0
        if pruned:
            self.counters["quarantine_pruned"] += pruned
            log.warning("quarantine: over its budget, the oldest %d rows of the largest senders deleted", pruned)

    def keep_within_quota(self) -> None:
        """Delivered data goes first (by age, then by size); unsent data only by the policy, counted."""
        cfg, store, destination = self.cfg, self.store, self.destination
        max_age = time.time() - cfg.store_max_age_days * 86400
        with store:
            store.prune_delivered(destination, max_age, 1000)
            store.forget_held_back(time.time() - cfg.store_held_back_days * 86400)
            if cfg.store_policy == "drop_oldest":
                too_old = store.drop_unsent_older_than(destination, max_age)
                if too_old:
                    store.record_drop("readings", too_old,
                                      f"unsent for more than {cfg.store_max_age_days} days (policy drop_oldest)")
                    self.counters["dropped"] += too_old
                    log.error("store: dropped %d readings unsent for more than %d days",
                              too_old, cfg.store_max_age_days)
        if self.used_bytes() > cfg.store_max_bytes:
            store.checkpoint()  # the WAL's space back before it is counted
        while self.used_bytes() > cfg.store_max_bytes:
            with store:
                pruned = store.prune_delivered(destination, time.time(), 50)
            if pruned:
                store.checkpoint()
                continue
            truncated = store.checkpoint()
            if self.used_bytes() <= cfg.store_max_bytes:
                break  # the WAL's space was enough
            if not truncated and store.used_bytes() <= cfg.store_max_bytes:
                break  # over only by a WAL a reader holds for now: no reason to drop unsent data
            if cfg.store_policy == "refuse_new":
                if not self.refusing:
                    log.error("store: %d bytes in use, over the quota of %d; policy refuse_new: not taking "
                              "messages until the hub has caught up", self.used_bytes(), cfg.store_max_bytes)
                self.refusing = True
                return
            with store:
                dropped = store.drop_oldest_unsent(destination, 5)
                if dropped.readings or dropped.batches:
                    store.record_drop("readings", dropped.readings,
                                      f"store over its quota of {cfg.store_max_bytes} bytes (policy drop_oldest)")
            if not (dropped.readings or dropped.batches):
                break
            self.counters["dropped"] += dropped.readings
            log.error("store: over the quota of %d bytes: dropped the %d oldest unsent readings (%d batches)",
                      cfg.store_max_bytes, dropped.readings, dropped.batches)
        if self.refusing and self.used_bytes() <= cfg.store_max_bytes:
            log.info("store: back under its quota; taking messages again")
            self.refusing = False

    def tell_state(self) -> None:
        """The store's line of the live state (govedge.gateway.health)."""
        quota = f"{self.cfg.store_max_bytes / 1e6:g} MB"
        if self.room.cause is not None:
            self.on_state(f"{self.room.cause}: not acknowledging, messages wait in the broker and on the nodes",
                          False)
        elif self.refusing:
            self.on_state(f"over its quota of {quota}: refusing new messages until the hub has "
                          "caught up (policy refuse_new)", False)
        else:
            self.on_state(f"within its quota of {quota} (policy {self.cfg.store_policy})", True)
