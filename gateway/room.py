"""Room on disk: a full disk never ends the gateway and never loses what it held (gateway/README.md, "store").

The gateway writes gateway.db with its WAL and shm, live.json and the crash guard's journal into its
data_dir, on the SD card. Two things keep it within the card:

- a reserve (``[store] min_free_mb``): while the file system has less free space than that (the free
  pages inside gateway.db count as room), the gateway takes no message from its inbox and commits
  nothing, so nothing is acknowledged: the broker and the nodes' flash buffers hold what comes meanwhile
  (the broker sends at most its max_inflight_messages unacknowledged, so the gateway's memory stays
  bounded); the quota makes room first (govedge.gateway.quota, ``make_room``);
- a commit that fails all the same (SQLITE_FULL, ENOSPC: the disk filled faster than the reserve could
  tell) is rolled back, what it held stays in hand unacknowledged, and it is committed again after
  ``RETRY_S`` once the quota has made room.

Either way the cause is one log line (and one more when it is over), the store's state in live.json
(`govedge gateway status`) and the metrics govedge_store_free_bytes and govedge_store_refusing.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from govedge.core.errors import text_of

log = logging.getLogger("govedge.gateway")

SQLITE_IOERR, SQLITE_FULL = 10, 13  # primary result codes (https://sqlite.org/rescode.html)
RETRY_S = 2.0  # a commit that failed for want of room is tried again this long after
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_fault(exc: BaseException) -> bool:
    """The store or a file could not be written for want of room, or of a working disk: the disk's fault,
    never the message's (such a message is not quarantined, it waits)."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)
        return str(exc).startswith(("database or disk is full", "disk I/O error"))
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


class Room:
    """The free space of the data_dir's file system against the reserve, and the commit that failed for
    want of it. ``refusing()`` is asked before messages are taken; ``failed``/``committed`` are told by
    the committer."""

    def __init__(self, data_dir: str | os.PathLike, reserve: int, spare: Callable[[], int] = lambda: 0,
                 on_change: Callable[[], None] = lambda: None):
        """``spare``: bytes the store can reuse without growing the file (its free pages);
        ``on_change``: called when the cause of refusing comes or goes."""
        self.data_dir = Path(data_dir)
        self.reserve = reserve
        self.spare = spare
        self.on_change = on_change
        self.retry_s = RETRY_S
        self.free = self.total = 0
        self.failure: str | None = None  # the last commit's failure, until one succeeds
        self.failed_at = 0.0
        self.cause: str | None = None  # why messages are not taken now, one line; None: they are
        self.kind: str | None = None  # "reserve" (free space below it) or "failed" (a commit failed)

    def look(self) -> int:
        """The file system's free space now (bytes an unprivileged writer may use)."""
        st = os.statvfs(self.data_dir)
        self.free, self.total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        return self.free

    def short(self) -> bool:
        """Less room than the reserve: free space plus the store's free pages."""
        return self.look() + self.spare() < self.reserve

    def refusing(self) -> bool:
        """Whether messages must wait now: room below the reserve, or a commit failed for want of room
        less than ``retry_s`` ago (after that, one attempt goes ahead)."""
        if self.short():
            self._tell("reserve", f"disk full: {_mb(self.free)} MB free of {_mb(self.total)} MB, reserve "
                       f"{_mb(self.reserve)} MB")
            return True
        if self.failure is not None:
            self._tell("failed", f"disk full: a commit failed ({self.failure}); {_mb(self.free)} MB free of "
                       f"{_mb(self.total)} MB, reserve {_mb(self.reserve)} MB")
            return time.monotonic() - self.failed_at < self.retry_s
        self._tell(None, None)
        return False

    def failed(self, exc: BaseException) -> None:
        """A commit failed for want of room; what it held was put back, unacknowledged."""
        self.failure = f"{type(exc).__name__}: {text_of(exc)}"
        self.failed_at = time.monotonic()
        self.look()
        self.refusing()

    def committed(self) -> None:
        """A commit went through."""
        if self.failure is not None:
            self.failure = None
            self.refusing()

    def _tell(self, kind: str | None, cause: str | None) -> None:
        if cause is None and self.cause is not None:
            log.warning("store: room on disk again (%s MB free of %s MB, reserve %s MB); acknowledging "
                        "messages again", _mb(self.free), _mb(self.total), _mb(self.reserve))
        elif cause is not None and self.cause is None:
            log.error("store: %s; not acknowledging: messages wait in the broker and on the nodes until "
                      "there is room (%s)", cause, self.data_dir)
        changed = kind != self.kind
        self.cause, self.kind = cause, kind
        if changed:  # the kind of cause, not every byte of free space: live.json is written on the SD card
            self.on_change()


class Undo:
    """What a commit changes in the gateway's memory, put back when the commit is rolled back: the last
    sequence numbers' windows and key boundaries the checks noted, the batcher's count and closed windows, the
    counters of the main loop and, while room is short (when a failure is to be expected), the filters'
    and aggregation's state. A disk that fills faster than that can be told may leave the derived
    aggregates counting a retried reading twice; the signed readings themselves are never doubled."""

    COUNTED = ("verified", "duplicates", "quarantined", "held_back_", "not_aggregated_", "condense_faults",
                "waiting_for_registry")  # what accept and its stages count, on the main loop's thread

    def __init__(self, gw):
        self.gw = gw
        self.spaces = dict(gw.checks.spaces)
        bounds = gw.checks.bounds
        self.bounds = None if bounds is None else (dict(bounds.known), set(bounds.done))
        self.waiting = gw.batcher.waiting
        self.aggregates = len(gw.batcher.aggregates)
        self.quarantined_bytes = gw.quota.quarantined_bytes
        self.counters = {k: v for k, v in gw.counters.items() if k.startswith(self.COUNTED)}
        self.derived = None
        if gw.room.kind is not None or gw.room.free < 2 * gw.room.reserve:
            self.derived = copy.deepcopy((gw.filter._devices, gw.aggregator._devices))

    def restore(self) -> None:
        gw = self.gw
        gw.checks.spaces.clear()
        gw.checks.spaces.update(self.spaces)
        if self.bounds is not None:
            gw.checks.bounds.known, gw.checks.bounds.done = self.bounds
        gw.batcher.waiting = self.waiting
        del gw.batcher.aggregates[self.aggregates:]
        gw.quota.quarantined_bytes = self.quarantined_bytes
        for key in [k for k in gw.counters if k.startswith(self.COUNTED)]:
            gw.counters[key] = self.counters.get(key, 0)
        if self.derived is not None:
            gw.filter._devices, gw.aggregator._devices = self.derived
        else:
            log.warning("store: a commit failed with room above twice the reserve: the aggregates may count "
                        "its readings twice when they are committed again")
