"""The gateway's heartbeat: its signed status record to the hub (docs/FORMAT.md, "The gateway's status record").

The uplink sends one when it connects to the hub's broker and then every
``[hub] heartbeat_s`` seconds (0: none), QoS 1, on
``govedge/v1/gateway/<id>/status``. ``Heartbeats.record`` builds it from the
store's indexes (the unbatched readings' partial index, the batches after the
hub's cursor, the epochs not anchored, one lookup per device): a heartbeat never
counts all readings. Its number grows within the store (the start count of the
service, kept in the store, in the high 32 bits): the hub refuses a replay.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Callable

from govedge.core import heartbeat, redact
from govedge.core.config import ConfigError

from .clocksync import GatewayClock
from .config import GatewayConfig
from .store import Store


def software_version() -> str:
    """The installed govchain-edge's version ("unknown" when it runs from a folder not installed)."""
    try:
        return importlib.metadata.version("govchain-edge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _whole(t: float | None) -> int | None:
    return None if t is None or t < 0 else int(t)


class Heartbeats:
    """Builds and signs the gateway's status records. ``refusing``: whether the gateway acknowledges nothing
    now (asked from the uplink's thread)."""

    def __init__(self, cfg: GatewayConfig, key, store: Store, clock: GatewayClock,
                 refusing: Callable[[], bool] = lambda: False, destination: str = "hub"):
        if not cfg.heartbeat_s >= 0:
            raise ConfigError(f"[hub] heartbeat_s must be a number of seconds, 0 for none, not {cfg.heartbeat_s:g}")
        self.cfg = cfg
        self.key = key
        self.clock = clock
        self.refusing = refusing
        self.destination = destination
        self.interval_s = cfg.heartbeat_s
        self.version = software_version()
        with store:
            self.start = store.count_start()  # this run's records number from here: above every earlier run's
        self.count = 0

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def record(self, store: Store) -> bytes:
        """The next status record, signed, from ``store`` (the caller's connection, in its thread)."""
        self.count += 1
        b = store.backlog(self.destination)
        st = os.statvfs(self.cfg.data_dir)
        devices = tuple(heartbeat.DeviceSeen(d, _whole(seen), seq, _whole(node_time))
                        for d, seen, seq, node_time in store.devices_seen())
        h = heartbeat.Heartbeat(
            gateway_id=self.cfg.gateway_id, store_id=store.store_id, seq=(self.start << 32) | self.count,
            time=int(self.clock.now()), heartbeat_s=max(1, round(self.interval_s)), version=self.version,
            unbatched=b.unbatched, unconfirmed=b.unconfirmed, oldest_unconfirmed=_whole(b.oldest_unconfirmed),
            unanchored=b.unanchored, oldest_unanchored=_whole(b.oldest_unanchored),
            anchor_error=None if b.anchor_error is None else redact.text(b.anchor_error),
            free_bytes=st.f_bavail * st.f_frsize, refusing=bool(self.refusing()),
            clock_synchronized=self.clock.synchronized(), devices=devices, devices_total=len(devices))
        return heartbeat.sign(self.key, h)
