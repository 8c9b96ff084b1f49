"""What a technician, a web page and Prometheus want to know about a gateway: its store and its live state.

`status(cfg)` builds the one document `govedge gateway status` prints (`describe`, or
as JSON with `--json`) and whose `exit_code` it exits with; the gateway's web page
serves the same document. It reads gateway.db read-only, with queries that stay
cheap on a store of millions of readings (each one an index lookup or a scan of a
bounded table), so it works whether the service runs or not and as often as
anyone asks. `snapshot(db_path)` holds the figures the Prometheus endpoint adds to
its live counters (govedge.gateway.metrics).

The running service also keeps `live.json` next to gateway.db: its process
id and that process's start time (field 22 of /proc/PID/stat, in clock ticks
since boot, and the boot's id), when it started, and the state of its parts
(local broker, hub, anchoring, store, clock, serial ports) with the time each
last changed and, for a connection, the cause of its last failure. It is
written when something changes, never on a timer (an SD card wears with every
write), and removed when the service stops cleanly. The service runs while a
process with that id and that start time exists: a process id the kernel gave
to another program after the gateway died does not count.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

from govedge.anchor import NONE as NO_ANCHOR
from govedge.core import redact, wire
from govedge.core.connection import CONNECTING
from govedge.core.errors import GovedgeError, text_of

log = logging.getLogger("govedge.gateway")

LIVE_FILE = "live.json"


class LiveState:
    """The service's side of live.json: ``set(part, state)`` from any thread. A write that fails (a full
    disk) never raises: it is logged once and done again by the next ``set`` or ``retry``, whether or not
    the state changed meanwhile, so live.json never stays behind."""

    def __init__(self, data_dir: Path, gateway_id: str, workers: int):
        self.path = Path(data_dir) / LIVE_FILE
        self._lock = threading.Lock()
        self.doc = {"gateway_id": gateway_id, "pid": os.getpid(), "start_ticks": start_ticks(os.getpid()),
                    "boot_id": boot_id(), "started_at": time.time(), "verify_workers": workers, "parts": {}}
        self.unwritten: str | None = None  # why the last write failed; None: live.json holds self.doc

    def set(self, part: str, state: str, ok: bool, failure: dict | None = None) -> None:
        """``failure``: a connection's cause (govedge.core.connection.Link): the current one while ``ok`` is
        False, the one that just ended when it is True. The part keeps the last one it was given."""
        state = redact.text(state)  # a state may quote an endpoint: live.json is readable by technicians
        if failure is not None:
            failure = {k: redact.text(v) if isinstance(v, str) else v for k, v in failure.items()}
        with self._lock:
            old = self.doc["parts"].get(part)
            same = old and old["state"] == state and old["ok"] == ok and (failure is None
                                                                          or old.get("last_failure") == failure)
            if same and self.unwritten is None:
                return
            if not same:
                entry = {"state": state, "ok": ok, "since": time.time()}
                last = failure or (old or {}).get("last_failure")
                if last is not None:
                    entry["last_failure"] = last
                self.doc["parts"][part] = entry
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


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22); None: no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # field 2, the command name in parentheses, may hold spaces and parentheses: count after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[22 - 3])


def boot_id() -> str | None:
    """This boot's random id: start ticks count from boot, so a live.json from before a reboot is told apart."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def live(data_dir: Path) -> dict | None:
    """The service's live.json, or None when it has none (stopped cleanly, or never started), with
    ``running`` (whether its process still runs: the same process id with the same start time in the
    same boot) and, when it does not, ``gone``: why it is known not to."""
    path = Path(data_dir) / LIVE_FILE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = doc.get("pid")
    ticks = start_ticks(pid) if isinstance(pid, int) and pid > 0 else None
    if ticks is None:
        doc["running"], doc["gone"] = False, f"process {pid} is gone"
    elif doc.get("boot_id") not in (None, boot_id()):
        doc["running"], doc["gone"] = False, f"process {pid} is gone (the machine started again since)"
    elif doc.get("start_ticks") not in (None, ticks):  # None: a live.json from before start times were kept
        doc["running"], doc["gone"] = False, f"process {pid} is gone (the id is another program's now)"
    else:
        doc["running"] = True
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


# -- the status document -------------------------------------------------------------------------------

FORMAT = 1  # the status document's version: fields are only ever added
START_GRACE_S = 30.0  # a connection's first attempt ("connecting to ...") is not a problem for this long
SILENT_INTERVALS = 3  # a node is silent after this many of its intervals without a message...
SILENT_MIN_S = 120.0  # ...and at least this long
INTERVAL_SAMPLES = 9  # its newest messages, from whose gaps its interval is estimated
STATUS_SEARCH = 1000  # a node's newest status record is looked for among its newest this many messages
UNSENT_LATE_S = 900.0  # a batch the hub has not confirmed this long after it was made is a problem
UNANCHORED_LATE_S = 3600.0  # an epoch not on the chain this long after it closed is a problem
HELD_BACK_WINDOW_S = 86400.0  # held-back values are counted over the last day (the table keeps 30 days)

# what a node's status record holds (docs/NODE.md, "Status record"), and the name each has in the document
_STATUS_FIELDS = {"health": "health", "uptime": "uptime_s", "buffer_pending": "buffer_pending",
                  "buffer_dropped": "buffer_dropped", "time_set": "time_set", "heap_free": "heap_free_bytes",
                  "vsupply": "vsupply_v", "error": "error"}


class StatusError(GovedgeError, RuntimeError):
    """The status could not be read: the store is missing or unreadable. One line naming the file;
    ``exit_code`` for `govedge gateway status`: 2 when the service never ran with this data_dir, else 3."""

    code = "status_unavailable"

    def __init__(self, line: str, exit_code: int = 3):
        super().__init__(line)
        self.exit_code = exit_code


def _plain(value):
    """A status record's value as JSON has it (a decimal fraction as a float)."""
    return float(value) if isinstance(value, Decimal) else value


def _node_status(message: bytes) -> dict:
    """The fields of a stored status record (verified when it was stored; decoded here without checking again)."""
    try:
        record = wire.decode_unverified(message)
    except wire.WireError:
        return {}
    return {_STATUS_FIELDS[m.name]: _plain(m.value) for m in record.measurements if m.name in _STATUS_FIELDS}


def _interval(rows: list[tuple]) -> float | None:
    """A node's interval, the median gap between its newest messages (by the node's clock when every one has
    a time, else by their arrival); None with fewer than three messages."""
    if len(rows) < 3:
        return None
    times = [r[0] for r in rows] if all(r[0] is not None for r in rows) else [r[1] for r in rows]
    gaps = sorted(a - b for a, b in zip(times, times[1:]))
    return max(0.0, float(gaps[len(gaps) // 2]))


def _registry_devices(path: Path) -> set[str] | None:
    from govedge.core.registry import Registry

    try:
        return set(Registry.load(path).devices)
    except Exception:  # noqa: BLE001 - status tells what it can; the service names a broken registry itself
        return None


def status(cfg, now: float | None = None) -> dict:
    """The gateway's status document (gateway/README.md, "status", field by field). ``now``: the time it is
    made for (default: now). Raises StatusError when the store cannot be read."""
    now = time.time() if now is None else now
    db_path = Path(cfg.data_dir) / "gateway.db"
    try:
        if not db_path.exists():
            raise StatusError(f"not running: {db_path} does not exist: has the gateway ever run with this data_dir "
                              "([gateway] data_dir)?", exit_code=2)
        live_doc = live(cfg.data_dir)
        disk = _disk(cfg, db_path)
    except PermissionError as exc:
        raise StatusError(f"{exc.filename or cfg.data_dir}: permission denied: run it as root (sudo) or as the "
                          "service's user") from None
    except OSError as exc:
        raise StatusError(f"{cfg.data_dir}: {text_of(exc)}") from None
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            db.execute("BEGIN")  # one consistent view while the service writes
            doc = _from_store(db, cfg, now)
        finally:
            db.close()
    except sqlite3.Error as exc:
        hint = (": run it as root (sudo) or as the service's user" if "unable to open" in str(exc)
                or not os.access(db_path, os.R_OK) else "")
        raise StatusError(f"{db_path}: {text_of(exc)}{hint}") from None
    doc = {"format": FORMAT, "gateway_id": cfg.gateway_id, "at": now, **doc}
    doc["service"] = _service(live_doc)
    doc["parts"] = live_doc["parts"] if live_doc and live_doc["running"] else {}
    doc["store"].update(disk)
    store_part = doc["parts"].get("store")
    doc["store"]["refusing"] = None if store_part is None else not store_part["ok"]
    doc["problems"] = _problems(doc)
    return doc


def _service(live_doc: dict | None) -> dict:
    if live_doc is None:
        return {"running": False, "pid": None, "started_at": None, "verify_workers": None,
                "why": "no live state: stopped cleanly or never started"}
    out = {"running": live_doc["running"], "pid": live_doc.get("pid"), "started_at": live_doc.get("started_at"),
           "verify_workers": live_doc.get("verify_workers")}
    if not live_doc["running"]:
        out["why"] = f"{live_doc['gone']} without stopping cleanly"
    return out


def _disk(cfg, db_path: Path) -> dict:
    st = os.statvfs(cfg.data_dir)
    files = sum(p.stat().st_size for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists())
    return {"free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
            "reserve_bytes": cfg.store_min_free_bytes, "file_bytes": files, "max_bytes": cfg.store_max_bytes,
            "policy": cfg.store_policy}


def _from_store(db: sqlite3.Connection, cfg, now: float) -> dict:
    q = lambda sql, *a: db.execute(sql, a).fetchone()  # noqa: E731
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    cursor = q("SELECT batch_seq FROM cursors WHERE destination = 'hub'")
    confirmed = None if cursor is None else cursor[0]
    unsent = q("SELECT count(*), min(created_at) FROM batches WHERE seq > ?", -1 if confirmed is None else confirmed)
    last_batch = q("SELECT max(seq) FROM batches")[0]
    newest = q("SELECT received_at FROM readings ORDER BY id DESC LIMIT 1")
    # a store the service has not opened since this index came has none: not counted (None), rather than
    # a pass over every reading
    flagged = q("SELECT count(*) FROM readings WHERE clock_flag IS NOT NULL")[0] if "readings_clock_flag" in indexes \
        else None
    epochs = q("SELECT count(*), sum(confirmed = 0), min(CASE WHEN confirmed = 0 THEN closed_at END) FROM epochs")
    error = q("SELECT error FROM epochs WHERE confirmed = 0 AND error IS NOT NULL ORDER BY number LIMIT 1")
    by_code = dict(db.execute("SELECT code, count(*) FROM quarantine GROUP BY code ORDER BY code"))
    by_sender = dict(db.execute("SELECT sender, count(*) FROM quarantine GROUP BY sender"))
    held_by_device, held_by_rule = _held_back(db, now - HELD_BACK_WINDOW_S)
    drops = dict(db.execute("SELECT what = 'quarantine', coalesce(sum(count), 0) FROM drops GROUP BY 1"))
    return {
        "nodes": _nodes(db, cfg, now, by_sender, held_by_device),
        "readings": {"last_received_at": newest[0] if newest else None, "clock_flagged": flagged,
                     "waiting_for_batch": q("SELECT count(*) FROM readings WHERE batch_seq IS NULL")[0]},
        "batches": {"last": last_batch, "hub_confirmed_up_to": confirmed, "unconfirmed": unsent[0],
                    "oldest_unconfirmed_at": unsent[1]},
        "anchoring": {"backend": cfg.anchor_backend, "epochs": epochs[0], "unanchored": epochs[1] or 0,
                      "oldest_unanchored_at": epochs[2], "last_error": error[0] if error else None},
        "store": {"dropped": drops.get(0, 0)},
        "quarantine": {"kept": sum(by_code.values()), "by_code": by_code, "pruned": drops.get(1, 0)},
        "held_back": {"last_24h": sum(held_by_rule.values()), "by_rule": held_by_rule},
    }


def _held_back(db: sqlite3.Connection, since: float) -> tuple[dict, dict]:
    """Values held back since ``since``, per device and per rule: the table's newest rows only (its ids grow
    with time), found by walking back from the newest to the first older row."""
    older = db.execute("SELECT id FROM held_back WHERE held_at < ? ORDER BY id DESC LIMIT 1", (since,)).fetchone()
    rows = db.execute("SELECT r.device_id, h.rule, count(*) FROM held_back h JOIN readings r ON r.id = h.reading_id "
                      "WHERE h.id > ? GROUP BY 1, 2", (older[0] if older else -1,)).fetchall()
    by_device: dict[str, int] = {}
    by_rule: dict[str, int] = {}
    for device, rule, n in rows:
        by_device[device] = by_device.get(device, 0) + n
        by_rule[rule] = by_rule.get(rule, 0) + n
    return by_device, dict(sorted(by_rule.items()))


def _nodes(db: sqlite3.Connection, cfg, now: float, quarantined: dict, held: dict) -> list:
    """One entry per device the store has messages of or the registry names, by device id."""
    registry = _registry_devices(cfg.registry)
    seen: dict[str, int] = {}  # device -> the highest sequence number accepted, of any of its keys
    for space, last_seq in db.execute("SELECT device_id, last_seq FROM devices"):
        device = space.split(" ")[0]  # 'DEVICE KEYID': one row per key (govedge.gateway.admit)
        seen[device] = max(last_seq, seen.get(device, last_seq))
    nodes = []
    for device in sorted(set(seen) | (registry or set())):
        node = {"device_id": device, "in_registry": None if registry is None else device in registry,
                "last_seen": None, "last_seq": seen.get(device), "interval_s": None, "silent": False,
                "status_at": None, "status_seq": None, **{name: None for name in _STATUS_FIELDS.values()},
                "quarantined": quarantined.get(device, 0), "held_back_24h": held.get(device, 0)}
        # newest first by sequence number: the unique (device_id, seq) index
        recent = db.execute("SELECT seq, node_time, received_at FROM readings WHERE device_id = ? "
                            "ORDER BY seq DESC LIMIT ?", (device, INTERVAL_SAMPLES)).fetchall()
        if recent:  # none: never heard from, or every message delivered and pruned by the quota
            node["last_seen"] = recent[0][2]
            node["interval_s"] = _interval([(t, r) for _, t, r in recent])
            quiet = max(SILENT_INTERVALS * (node["interval_s"] or 0.0), SILENT_MIN_S)
            node["silent"] = now - node["last_seen"] > quiet
            # its newest status record among its newest STATUS_SEARCH messages (a node sends one every
            # status_every readings): an index walk of bounded length, whatever the node sent before
            floor = db.execute("SELECT seq FROM readings WHERE device_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                               (device, STATUS_SEARCH - 1)).fetchone()
            record = db.execute("SELECT seq, received_at, message FROM readings WHERE device_id = ? AND seq >= ? "
                                "AND kind = 'status' ORDER BY seq DESC LIMIT 1",
                                (device, floor[0] if floor else -1)).fetchone()
            if record is not None:
                node["status_seq"], node["status_at"] = record[0], record[1]
                node.update(_node_status(bytes(record[2])))
        nodes.append(node)
    return nodes


def _problems(doc: dict) -> list[str]:
    """What makes `govedge gateway status` exit with 1, one line each (gateway/README.md, "status")."""
    now, out = doc["at"], []
    for name, part in sorted(doc["parts"].items()):
        starting = part["state"].startswith(CONNECTING) and now - part["since"] < START_GRACE_S
        if not part["ok"] and not starting:
            out.append(f"{name}: {part['state']}")
    for node in doc["nodes"]:
        if node["silent"] and node["in_registry"] is not False:
            out.append(f"node {node['device_id']}: silent for {_duration(now - node['last_seen'])}"
                       + (f" (it sent every {_duration(node['interval_s'])})" if node["interval_s"] else ""))
    b = doc["batches"]
    if b["oldest_unconfirmed_at"] is not None and now - b["oldest_unconfirmed_at"] > UNSENT_LATE_S:
        out.append(f"batches: the oldest the hub has not confirmed is {_duration(now - b['oldest_unconfirmed_at'])}"
                   " old: check the uplink")
    a = doc["anchoring"]
    if a["backend"] != NO_ANCHOR and a["oldest_unanchored_at"] is not None \
            and now - a["oldest_unanchored_at"] > UNANCHORED_LATE_S:
        out.append(f"anchoring: the oldest epoch not on the chain closed {_duration(now - a['oldest_unanchored_at'])}"
                   " ago" + (f" (last error: {a['last_error']})" if a["last_error"] else ""))
    s = doc["store"]
    if s["free_bytes"] < s["reserve_bytes"] and "store" not in doc["parts"]:
        out.append(f"store: {_mb(s['free_bytes'])} MB free, below the reserve of {_mb(s['reserve_bytes'])} MB "
                   "([store] min_free_mb)")
    return out


def exit_code(doc: dict) -> int:
    """0: running and no problem; 1: running with a problem (doc["problems"]); 2: not running."""
    if not doc["service"]["running"]:
        return 2
    return 1 if doc["problems"] else 0


# -- in words -------------------------------------------------------------------------------------------

def _duration(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def describe(doc: dict) -> str:
    """The status document in plain words, for `govedge gateway status`."""
    now = doc["at"]
    ago = lambda t: _duration(now - t)  # noqa: E731
    svc = doc["service"]
    verdict = ("NOT RUNNING" if not svc["running"] else
               f"{len(doc['problems'])} PROBLEM{'S' if len(doc['problems']) > 1 else ''}" if doc["problems"]
               else "ok")
    lines = [f"gateway {doc['gateway_id']}: {verdict}"]
    if svc["pid"] is None:
        lines.append(f"  service     not running ({svc['why']})")
    elif not svc["running"]:
        lines.append(f"  service     NOT RUNNING: {svc['why']} (started {ago(svc['started_at'])} ago) — see "
                     "`journalctl -u govedge-gateway`")
    else:
        lines.append(f"  service     running for {ago(svc['started_at'])} (process {svc['pid']}, "
                     f"{svc['verify_workers']} verification workers)")
    for part, st in sorted(doc["parts"].items()):
        mark = "" if st["ok"] else "PROBLEM: "
        lines.append(f"  {part:<11} {mark}{st['state']} for {ago(st['since'])}")
        failure = st.get("last_failure")
        if failure and "until" not in failure:  # the failure now: what to check
            lines.append(f"  {'':<11} {failure['hint']}")
        elif failure:
            lines.append(f"  {'':<11} the last failure ended {ago(failure['until'])} ago: {failure['cause']}")
    s = doc["store"]
    lines.append(f"  disk        {_size(s['free_bytes'])} free of {_size(s['total_bytes'])} (reserve "
                 f"{_size(s['reserve_bytes'])}); the store's files take {_size(s['file_bytes'])}")
    r = doc["readings"]
    if r["last_received_at"] is None:
        lines.append("  readings    none received yet")
    else:
        lines.append(f"  readings    from {len([n for n in doc['nodes'] if n['last_seen'] is not None])} devices, "
                     f"the last {ago(r['last_received_at'])} ago")
    if r["clock_flagged"]:
        lines.append(f"  flagged     {r['clock_flagged']} readings timed ahead of the gateway's clock while it was "
                     "not known to be synchronized (clock_unsynced; stored and forwarded as any other)")
    b = doc["batches"]
    lines.append(f"  waiting     {r['waiting_for_batch']} readings for the next batch, "
                 f"{b['unconfirmed']} batches not yet confirmed by the hub")
    if b["last"] is None:
        lines.append("  delivered   no batch made yet")
    elif b["unconfirmed"]:
        lines.append(f"  delivered   the oldest unconfirmed batch is {ago(b['oldest_unconfirmed_at'])} old"
                     " — check the hub connection if this keeps growing")
    else:
        lines.append(f"  delivered   the hub confirmed every batch (up to #{b['last']})")
    q = doc["quarantine"]
    codes = ", ".join(f"{code} {n}" for code, n in q["by_code"].items()) or "none"
    pruned = f"; {q['pruned']} older rows deleted to stay within its budget" if q["pruned"] else ""
    lines.append(f"  quarantine  {q['kept']} messages ({codes}){pruned}")
    h = doc["held_back"]
    rules = ", ".join(f"{rule} {n}" for rule, n in h["by_rule"].items()) or "none"
    lines.append(f"  held back   {h['last_24h']} values by the filters in the last 24 h ({rules})")
    lines.append(f"  dropped     {s['dropped']} (disk quota)")
    a = doc["anchoring"]
    if a["backend"] == NO_ANCHOR:
        lines.append(f"  epochs      {a['epochs']} closed, not anchored: anchoring is off ([anchor] backend = "
                     f"\"{NO_ANCHOR}\")")
    elif not a["epochs"]:
        lines.append("  epochs      none closed yet")
    elif a["unanchored"]:
        lines.append(f"  epochs      {a['epochs']}, of which {a['unanchored']} not yet on the chain, the "
                     f"oldest for {ago(a['oldest_unanchored_at'])}"
                     + (f" (last error: {a['last_error']})" if a["last_error"] else ""))
    else:
        lines.append(f"  epochs      {a['epochs']}, every one anchored on the chain")
    if doc["nodes"]:
        lines.append("nodes")
        width = max(len(n["device_id"]) for n in doc["nodes"])
        for n in doc["nodes"]:
            lines.append(f"  {n['device_id']:<{width}}  {_node_line(n, now)}")
    if doc["problems"]:
        lines.append("problems")
        lines.extend(f"  {p}" for p in doc["problems"])
    return "\n".join(lines)


def _node_line(n: dict, now: float) -> str:
    if n["last_seq"] is None:
        return "never heard from" + (" (in the registry)" if n["in_registry"] else "")
    if n["last_seen"] is None:
        return f"#{n['last_seq']}; its messages are delivered and pruned from the store: last seen unknown"
    seen = (f"SILENT for {_duration(now - n['last_seen'])}" if n["silent"]
            else f"seen {_duration(now - n['last_seen'])} ago") + f", #{n['last_seq']}"
    if n["status_at"] is None:
        told = "no status record yet (buffer unknown)"
    else:
        parts = [n["health"] or "health unknown"]
        if n["vsupply_v"] is not None:
            parts.append(f"{n['vsupply_v']:.2f} V")
        if n["heap_free_bytes"] is not None:
            parts.append(f"heap {n['heap_free_bytes']} B free")
        parts.append("buffer unknown" if n["buffer_pending"] is None else f"{n['buffer_pending']} in its buffer")
        if n["error"]:
            parts.append(f"error: {n['error']}")
        told = ", ".join(parts) + f" (status {_duration(now - n['status_at'])} ago)"
    extra = "" if n["in_registry"] is not False else "; not in the registry"
    return f"{seen}; {told}; quarantined {n['quarantined']}, held back {n['held_back_24h']} (24 h){extra}"
