"""Monthly partitions of a PostgreSQL hub store: years of a city's readings, dropped a month at a time.

A PostgreSQL store's ``readings`` and ``measurements`` are partitioned by range (PostgreSQL's declarative
partitioning) on ``at``: the time a reading is filed under, the node's own time when it signed it or, for a
node whose clock was not set, the time its gateway signed the batch (the same time ``govedge hub export``
windows by). One partition per calendar month in UTC, ``readings_p202611`` holding 2026-11-01T00:00:00Z up
to (not including) 2026-12-01; ``readings_pold`` takes everything before 2024-01-01 (nothing a gateway
takes: its clock check refuses such times). A partition is made before the first reading of its month is
stored: the hub makes the months of the batches it is about to store before their transaction starts
(``HubStore.prepare``), and the current month and the next ones every hour, so that the write path never
waits on a lock that making a table takes.

Retention (``[store] keep_months``) drops whole partitions: a month goes when it ended ``keep_months``
months before the current one began.
"""

from __future__ import annotations

import calendar
import re
import time

# 2024-01-01T00:00:00Z: the first month with a partition of its own (govedge.gateway.clocksync.TIME_FLOOR)
FLOOR = 1704067200
MONTHS_AHEAD = 2  # partitions made ahead of the current month
PARTITIONED = ("readings", "measurements")
_NAME = re.compile(r"^(readings|measurements)_p(\d{4})(\d{2})$")


def month_of(t: float) -> int:
    """The first second (UTC) of the month ``t`` lies in; FLOOR's month for anything before it."""
    if t < FLOOR:
        return FLOOR
    tm = time.gmtime(t)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def add_months(month: int, n: int) -> int:
    """The month ``n`` months after (or, negative, before) ``month`` (a first second, UTC)."""
    tm = time.gmtime(month)
    index = tm.tm_year * 12 + tm.tm_mon - 1 + n
    return calendar.timegm((index // 12, index % 12 + 1, 1, 0, 0, 0))


def name(table: str, month: int) -> str:
    return f"{table}_p{time.strftime('%Y%m', time.gmtime(month))}"


def month_of_name(partition: str) -> int | None:
    """The month a partition's name says (``readings_p202611``); None for ``_pold`` and other tables."""
    m = _NAME.match(partition)
    return calendar.timegm((int(m[2]), int(m[3]), 1, 0, 0, 0)) if m else None


def create(table: str, month: int) -> str:
    """The statement that makes ``table``'s partition of ``month`` (nothing if it is there)."""
    return (f"CREATE TABLE IF NOT EXISTS {name(table, month)} PARTITION OF {table} "
            f"FOR VALUES FROM ({month}) TO ({add_months(month, 1)})")


def create_old(table: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table}_pold PARTITION OF {table} FOR VALUES FROM (MINVALUE) TO ({FLOOR})"


def expired(partitions: list[str], now: float, keep_months: int) -> list[str]:
    """The monthly partitions whose month ended ``keep_months`` or more months before the current month
    began; none when ``keep_months`` is 0 (keep everything)."""
    if keep_months <= 0:
        return []
    cutoff = add_months(month_of(now), -keep_months)
    return sorted(p for p in partitions if (m := month_of_name(p)) is not None and add_months(m, 1) <= cutoff)


def cutoff(now: float, keep_months: int) -> float | None:
    """The time before which readings go (SQLite stores, and ``_pold``); None when everything is kept."""
    return add_months(month_of(now), -keep_months) if keep_months > 0 else None
