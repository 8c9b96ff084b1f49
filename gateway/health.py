"""What a technician and Prometheus want to know about a gateway, from its store.

`snapshot(db_path)` reads gateway.db read-only, so `govedge gateway status`
works whether the service runs or not; the service adds its live counters
and the uplink's state to the same figures for its Prometheus endpoint.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def snapshot(db_path: Path) -> dict:
    if not Path(db_path).exists():
        raise FileNotFoundError(f"{db_path} does not exist: has the gateway ever run with this data_dir?")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        q = lambda sql, *a: db.execute(sql, a).fetchone()  # noqa: E731
        cursor = q("SELECT batch_seq FROM cursors WHERE destination = 'hub'")
        acked = -1 if cursor is None else cursor[0]
        unsent = q("SELECT count(*), min(created_at) FROM batches WHERE seq > ?", acked)
        now = time.time()
        return {
            "readings": q("SELECT count(*) FROM readings")[0],
            "devices": q("SELECT count(*) FROM devices")[0],
            "unbatched": q("SELECT count(*) FROM readings WHERE batch_seq IS NULL")[0],
            "batches": q("SELECT count(*) FROM batches")[0],
            "batches_unsent": unsent[0],
            "oldest_unsent_batch_age_s": (now - unsent[1]) if unsent[1] else 0.0,
            "hub_cursor": acked,
            "quarantined": q("SELECT count(*) FROM quarantine")[0],
            "quarantined_by_code": dict(db.execute(
                "SELECT code, count(*) FROM quarantine GROUP BY code ORDER BY code").fetchall()),
            "held_back": q("SELECT count(*) FROM held_back")[0],
            "held_back_by_rule": dict(db.execute(
                "SELECT rule, count(*) FROM held_back GROUP BY rule ORDER BY rule").fetchall()),
            "dropped": q("SELECT coalesce(sum(count), 0) FROM drops")[0],
            "last_reading_age_s": (now - r[0]) if (r := q("SELECT max(received_at) FROM readings"))[0] else None,
        }
    finally:
        db.close()


def describe(s: dict, gateway_id: str) -> str:
    """The snapshot in plain words, for `govedge gateway status`."""
    lines = [f"gateway {gateway_id}"]
    if s["last_reading_age_s"] is None:
        lines.append("  readings    none received yet")
    else:
        lines.append(f"  readings    {s['readings']} from {s['devices']} devices, "
                     f"the last {s['last_reading_age_s']:.0f} s ago")
    lines.append(f"  waiting     {s['unbatched']} readings for the next batch, "
                 f"{s['batches_unsent']} batches not yet acknowledged by the hub")
    if s["batches_unsent"]:
        lines.append(f"  uplink      the oldest unsent batch is {s['oldest_unsent_batch_age_s']:.0f} s old"
                     " — check the hub connection if this keeps growing")
    else:
        lines.append(f"  uplink      the hub has every batch (up to #{s['hub_cursor']})")
    q = ", ".join(f"{code} {n}" for code, n in s["quarantined_by_code"].items()) or "none"
    lines.append(f"  quarantine  {s['quarantined']} messages ({q})")
    h = ", ".join(f"{rule} {n}" for rule, n in s["held_back_by_rule"].items()) or "none"
    lines.append(f"  held back   {s['held_back']} values by the filters ({h})")
    lines.append(f"  dropped     {s['dropped']} (disk quota)")
    return "\n".join(lines)
