"""What a technician and Prometheus want to know about a gateway, from its store.

`snapshot(db_path)` reads gateway.db read-only, so `govedge gateway status`
works whether the service runs or not; the service adds its live counters
and the uplink's state to the same figures for its Prometheus endpoint.

The running service also keeps `live.json` next to gateway.db: its process
id, when it started, and the state of its connections (local broker, hub,
serial ports) with the time each last changed. It is written when something
changes, never on a timer (an SD card wears with every write), and removed
when the service stops cleanly; whether the service still runs is told by
its process id.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from govedge.core import redact
from govedge.core.errors import text_of

log = logging.getLogger("govedge.gateway")

LIVE_FILE = "live.json"


class LiveState:
    """The service's side of live.json: ``set(part, state)`` from any thread. A write that fails (a full
    disk) never raises: it is logged once and done again by the next ``set`` or ``retry``, whether or not
    the state changed meanwhile, so live.json never stays behind."""

    def __init__(self, data_dir: Path, gateway_id: str, workers: int):
        self.path = Path(data_dir) / LIVE_FILE
        self._lock = threading.Lock()
        self.doc = {"gateway_id": gateway_id, "pid": os.getpid(), "started_at": time.time(),
                    "verify_workers": workers, "parts": {}}
        self.unwritten: str | None = None  # why the last write failed; None: live.json holds self.doc

    def set(self, part: str, state: str, ok: bool) -> None:
        state = redact.text(state)  # a state may quote an endpoint: live.json is readable by technicians
        with self._lock:
            old = self.doc["parts"].get(part)
            if old and old["state"] == state and old["ok"] == ok and self.unwritten is None:
                return
            if not (old and old["state"] == state and old["ok"] == ok):
                self.doc["parts"][part] = {"state": state, "ok": ok, "since": time.time()}
            self._write()

    def retry(self) -> None:
        """A write that failed, done again (the main loop calls it on every pass of its housekeeping)."""
        with self._lock:
            if self.unwritten is not None:
                self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.doc, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # half a file holds space the store needs
            if self.unwritten is None:
                log.error("live state: %s not written (%s); status may be behind until it is", self.path,
                          text_of(exc))
            self.unwritten = text_of(exc)
            return
        if self.unwritten is not None:
            log.warning("live state: %s written again", self.path)
        self.unwritten = None

    def remove(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)


def live(data_dir: Path) -> dict | None:
    """The running service's live.json, or None when no service runs on this data_dir."""
    path = Path(data_dir) / LIVE_FILE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{doc['pid']}/cmdline").read_bytes()
    except (OSError, KeyError, TypeError):
        cmdline = b""
    doc["running"] = b"gateway" in cmdline and b"run" in cmdline
    return doc


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
            "dropped": q("SELECT coalesce(sum(count), 0) FROM drops WHERE what <> 'quarantine'")[0],
            "quarantine_pruned": q("SELECT coalesce(sum(count), 0) FROM drops WHERE what = 'quarantine'")[0],
            "epochs": q("SELECT count(*) FROM epochs")[0],
            "epochs_unanchored": (u := q("SELECT count(*), min(closed_at) FROM epochs WHERE confirmed = 0"))[0],
            "oldest_unanchored_epoch_age_s": (now - u[1]) if u[1] else 0.0,
            "anchor_error": (e[0] if (e := q("SELECT error FROM epochs WHERE confirmed = 0 AND error IS NOT NULL "
                                             "ORDER BY number LIMIT 1")) else None),
            # one pass over the readings for both (a store the service has not migrated yet has no flags)
            "last_reading_age_s": (now - r[0]) if (r := q("SELECT max(received_at), " + (
                "count(clock_flag)" if any(c[1] == "clock_flag" for c in db.execute("PRAGMA table_info(readings)"))
                else "0") + " FROM readings"))[0] else None,
            "clock_flagged": r[1],
        }
    finally:
        db.close()


def _ago(t: float) -> str:
    s = max(0, time.time() - t)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def describe(s: dict, gateway_id: str, live_doc: dict | None = None) -> str:
    """The snapshot (and the live state, when given) in plain words, for `govedge gateway status`."""
    lines = [f"gateway {gateway_id}"]
    if live_doc is None:
        lines.append("  service     not running (no live state: stopped cleanly or never started)")
    elif not live_doc["running"]:
        lines.append(f"  service     NOT RUNNING: process {live_doc['pid']} is gone without stopping cleanly "
                     f"(started {_ago(live_doc['started_at'])} ago) — see `journalctl -u govedge-gateway`")
    else:
        lines.append(f"  service     running for {_ago(live_doc['started_at'])} (process {live_doc['pid']}, "
                     f"{live_doc['verify_workers']} verification workers)")
    if live_doc is not None and live_doc["running"]:
        for part, st in sorted(live_doc["parts"].items()):
            mark = "" if st["ok"] else "PROBLEM: "
            lines.append(f"  {part:<11} {mark}{st['state']} for {_ago(st['since'])}")
    if s["last_reading_age_s"] is None:
        lines.append("  readings    none received yet")
    else:
        lines.append(f"  readings    {s['readings']} from {s['devices']} devices, "
                     f"the last {s['last_reading_age_s']:.0f} s ago")
    if s["clock_flagged"]:
        lines.append(f"  flagged     {s['clock_flagged']} readings timed ahead of the gateway's clock while it was "
                     "not known to be synchronized (clock_unsynced; stored and forwarded as any other)")
    lines.append(f"  waiting     {s['unbatched']} readings for the next batch, "
                 f"{s['batches_unsent']} batches not yet acknowledged by the hub")
    if s["batches_unsent"]:
        lines.append(f"  delivered   the oldest unsent batch is {s['oldest_unsent_batch_age_s']:.0f} s old"
                     " — check the hub connection if this keeps growing")
    else:
        lines.append(f"  delivered   the hub has every batch (up to #{s['hub_cursor']})")
    q = ", ".join(f"{code} {n}" for code, n in s["quarantined_by_code"].items()) or "none"
    pruned = f"; {s['quarantine_pruned']} older rows deleted to stay within its budget" if s["quarantine_pruned"] else ""
    lines.append(f"  quarantine  {s['quarantined']} messages ({q}){pruned}")
    h = ", ".join(f"{rule} {n}" for rule, n in s["held_back_by_rule"].items()) or "none"
    lines.append(f"  held back   {s['held_back']} values by the filters ({h})")
    lines.append(f"  dropped     {s['dropped']} (disk quota)")
    if not s["epochs"]:
        lines.append("  epochs      none closed yet")
    elif s["epochs_unanchored"]:
        lines.append(f"  epochs      {s['epochs']}, of which {s['epochs_unanchored']} not yet on the chain, the "
                     f"oldest for {s['oldest_unanchored_epoch_age_s']:.0f} s"
                     + (f" (last error: {s['anchor_error']})" if s["anchor_error"] else ""))
    else:
        lines.append(f"  epochs      {s['epochs']}, every one anchored on the chain")
    return "\n".join(lines)
