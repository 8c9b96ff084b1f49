"""`govedge hub status`: the fleet as the hub sees it, from its store.

``status(cfg)`` builds one JSON-ready document (its fields: hub/README.md,
"Status"): every gateway, the longest silent first, with when the hub last
heard of it (a status record, a batch or an epoch record) and its backlog,
anchoring, store and clock from its latest signed status record
(govedge.core.heartbeat); every device with when it was last seen and how
often it sends; and the problems. A gateway is silent after ``silent_after``
of its own heartbeats without a word; a device after ``silent_after`` of its
intervals, learnt from its recent readings' times at the hub, or else from the
last seen times of its gateway's status records, and judged as of the latest
of these (a device is not called silent for the time a record takes to come).
``describe(doc)`` says it in plain words. Nothing here counts the readings.
"""

from __future__ import annotations

import sqlite3
import statistics
import time

from govedge.core import redact
from govedge.core.errors import GovedgeError, text_of
from govedge.core.registry import Registry

from .config import HubConfig
from .gateways import GatewayListError, Gateways
from .store import HubStore, StoreError

SILENT_AFTER = 3  # heartbeats of a gateway, intervals of a device
RECENT_READINGS = 8  # of each device at the hub, to learn its interval


class StatusUnavailable(GovedgeError, RuntimeError):
    """The hub's store (or its gateways file) cannot be read: `govedge hub status` exits 2."""

    code = "status_unavailable"


def _db_errors() -> tuple:
    errors: tuple = (StoreError, OSError, sqlite3.Error, GatewayListError)
    try:
        import psycopg
    except ImportError:
        return errors
    return errors + (psycopg.Error,)


def hub_time(state: dict, received_at: float, gateway_time: float | None) -> float | None:
    """A time of a gateway's status record in the hub's clock: as long before the record's arrival as it was
    before the record's signing by the gateway's clock (a gateway clock that is off does not shift it)."""
    return None if gateway_time is None else received_at - (state["time"] - gateway_time)


def status(cfg: HubConfig, now: float | None = None, silent_after: float = SILENT_AFTER) -> dict:
    """The hub's view of its gateways and devices now (``now``: another time, seconds since 1970)."""
    now = time.time() if now is None else now
    problems: list[str] = []
    try:
        known = Gateways.load(cfg.gateways, missing_ok=True)
        store = HubStore(cfg.store)
        try:
            rows = {r.gateway_id: r for r in store.gateway_statuses()}
            registry_devices, registry_problem = _registry_devices(cfg)
            devices = _devices(store, rows, registry_devices, now, silent_after)
        finally:
            store.close()
    except _db_errors() as exc:
        raise StatusUnavailable(f"the hub's store {redact.dsn(cfg.store)} cannot be read: "
                                f"{redact.text(text_of(exc), cfg.store)}") from None
    if registry_problem:
        problems.append(registry_problem)
    gateways = [_gateway(g, rows.get(g), g in known, now, silent_after) for g in {*known.doc["gateways"], *rows}]
    gateways.sort(key=lambda g: (g["last_heard"] is not None, g["last_heard"] or 0, g["gateway_id"]))
    for g in gateways:
        problems.extend(f"gateway {g['gateway_id']}: {p}" for p in g["problems"])
    for d in devices:
        if d["silent"]:
            problems.append(f"device {d['device_id']}" + (f" (gateway {d['gateway_id']})" if d["gateway_id"] else "")
                            + f": silent for {_span(d['silent_for_s'])}, more than {silent_after:g} times its "
                            f"interval of {_span(d['interval_s'])}")
    return {"now": now, "store": redact.dsn(cfg.store), "silent_after": silent_after, "ok": not problems,
            "problems": problems, "gateways": gateways, "devices": devices}


def _registry_devices(cfg: HubConfig) -> tuple[list[str], str | None]:
    try:
        return sorted(Registry.load(cfg.registry).devices), None
    except Exception as exc:  # noqa: BLE001 - the hub's registry: told as a problem, the rest shown all the same
        return [], f"registry {cfg.registry} cannot be read ({text_of(exc)}): the hub verifies no device by it"


def _gateway(gateway_id: str, row, known: bool, now: float, silent_after: float) -> dict:
    """One gateway's entry: when heard, and its latest status record's state (times in the hub's clock)."""
    heard = {"status record": row.received_at if row else None, "batch": row.last_batch_at if row else None}
    by = max((k for k in heard if heard[k] is not None), key=lambda k: heard[k], default=None)
    s = row.state if row and row.state else None
    g = {"gateway_id": gateway_id, "known": known, "last_heard": heard[by] if by else None, "heard_by": by,
         "last_status_at": heard["status record"], "last_batch_at": heard["batch"],
         "heartbeat_s": s["heartbeat_s"] if s else None, "silent": False, "version": None, "store_id": None,
         "unbatched": None, "unconfirmed_batches": None, "oldest_unconfirmed_batch": None, "epochs_unanchored": None,
         "oldest_unanchored_epoch": None, "anchor_error": None, "store_free_bytes": None, "store_refusing": None,
         "clock_synchronized": None, "devices_total": None, "problems": []}
    if s:
        g.update({k: s[k] for k in ("version", "store_id", "unbatched", "unconfirmed_batches", "epochs_unanchored",
                                    "anchor_error", "store_free_bytes", "store_refusing", "clock_synchronized",
                                    "devices_total")})
        g["oldest_unconfirmed_batch"] = hub_time(s, row.received_at, s["oldest_unconfirmed_batch"])
        g["oldest_unanchored_epoch"] = hub_time(s, row.received_at, s["oldest_unanchored_epoch"])
    problems = g["problems"]
    if by is None:
        problems.append("never heard from" + (" (it is in the hub's gateways file)" if known else ""))
    elif s and now - g["last_heard"] > silent_after * s["heartbeat_s"]:
        g["silent"] = True
        problems.append(f"silent for {_span(now - g['last_heard'])}, more than {silent_after:g} heartbeats of "
                        f"{_span(s['heartbeat_s'])} (last heard by {by})")
    if not known:
        problems.append("not in the hub's gateways file any more: its batches are refused")
    if s and s["store_refusing"]:
        problems.append("its store refuses messages (disk short of its reserve, or its quota full under "
                        "refuse_new): nodes keep them in their buffers; see `govedge gateway status` there")
    if s and s["anchor_error"]:
        problems.append(f"{s['epochs_unanchored']} epochs not anchored; last error: {s['anchor_error']}")
    if s and s["clock_synchronized"] is False:
        problems.append("its clock is not synchronized (check NTP there: timedatectl timesync-status)")
    return g


def _devices(store: HubStore, rows: dict, registry_devices: list[str], now: float, silent_after: float) -> list[dict]:
    """Every device of the registry or of a status record: last seen, interval, silence."""
    seen: dict[str, dict] = {}  # device -> what the latest status record that lists it says
    for r in rows.values():
        if not r.state:
            continue
        for device, (last_seen, last_seq, _node_time, interval) in r.devices.items():
            entry = {"gateway_id": r.gateway_id, "last_seq": last_seq, "interval_s": interval,
                     "last_seen": hub_time(r.state, r.received_at, last_seen),
                     "silent_for_s": None if last_seen is None else max(0, r.state["time"] - last_seen)}
            if device not in seen or (entry["last_seen"] or 0) > (seen[device]["last_seen"] or 0):
                seen[device] = entry
    out = []
    for device in sorted({*registry_devices, *seen}):
        d = {"device_id": device, "gateway_id": None, "last_seen": None, "last_seq": None, "interval_s": None,
             "silent_for_s": None, "learnt_from": None, "silent": False}
        recent = store.recent_reading_times(device, RECENT_READINGS)
        interval = _interval(recent)
        if device in seen:
            d.update(seen[device])
            d["learnt_from"] = "status record" if d["interval_s"] is not None else None
        elif recent:  # no status record names it: its newest reading at the hub, by the node's clock
            d.update(last_seen=recent[0][1], last_seq=recent[0][0], silent_for_s=max(0.0, now - recent[0][1]))
        if interval is not None:
            d["interval_s"], d["learnt_from"] = interval, "readings"
        d["silent"] = bool(d["interval_s"] and d["silent_for_s"] is not None
                           and d["silent_for_s"] > silent_after * d["interval_s"])
        out.append(d)
    return out


def _interval(recent: list[tuple[int, float]]) -> float | None:
    """A device's interval from its recent readings (seq, node time), newest first: the median of the seconds
    between neighbours over the sequence numbers between them; None with fewer than two."""
    steps = [(t1 - t2) / (s1 - s2) for (s1, t1), (s2, t2) in zip(recent, recent[1:]) if s1 > s2 and t1 > t2]
    return statistics.median(steps) if steps else None


def _span(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _ago(t: float | None, now: float) -> str:
    return "never" if t is None else f"{_span(max(0.0, now - t))} ago"


def describe(doc: dict) -> str:
    """The status document in plain words, for `govedge hub status`."""
    now = doc["now"]
    gateways, devices = doc["gateways"], doc["devices"]
    silent = sum(d["silent"] for d in devices)
    lines = [f"hub store {doc['store']}: {len(gateways)} gateways, {len(devices)} devices"
             + (f", {silent} silent" if silent else "")]
    for g in gateways:
        heard = f"heard {_ago(g['last_heard'], now)}" + (f" ({g['heard_by']})" if g["heard_by"] else "")
        mark = "SILENT " if g["silent"] else ""
        lines.append(f"gateway {g['gateway_id']}  {mark}{heard}"
                     + (f", version {g['version']}, store {g['store_id']}" if g["version"] else ""))
        if g["heartbeat_s"] is None:
            if g["last_heard"] is not None:
                lines.append("  status      no status record yet (heartbeat_s = 0 there, or a gateway from before "
                             "them): backlog unknown")
            continue
        backlog = f"  backlog     {g['unbatched']} readings waiting for a batch, {g['unconfirmed_batches']} " \
                  "batches not confirmed by the hub"
        if g["oldest_unconfirmed_batch"] is not None:
            backlog += f" (the oldest made {_ago(g['oldest_unconfirmed_batch'], now)})"
        lines.append(backlog)
        if g["epochs_unanchored"]:
            lines.append(f"  anchoring   {g['epochs_unanchored']} epochs not on the chain yet (the oldest closed "
                         f"{_ago(g['oldest_unanchored_epoch'], now)})"
                         + (f"; last error: {g['anchor_error']}" if g["anchor_error"] else ""))
        else:
            lines.append("  anchoring   every closed epoch on the chain")
        clock = {True: "synchronized", False: "NOT synchronized", None: "not known to be synchronized"}
        lines.append(f"  store       {g['store_free_bytes'] / 1e6:.1f} MB free"
                     + (", REFUSING messages" if g["store_refusing"] else "")
                     + f"; clock {clock[g['clock_synchronized']]}; {g['devices_total']} nodes; a status record "
                     f"every {_span(g['heartbeat_s'])}")
    for d in devices:
        if d["last_seen"] is None:
            seen = "never seen"
        else:
            seen = f"seen {_ago(d['last_seen'], now)}, #{d['last_seq']}"
        every = f", every {_span(d['interval_s'])}" if d["interval_s"] else ""
        where = f" via {d['gateway_id']}" if d["gateway_id"] else ""
        lines.append(f"device {d['device_id']}  {'SILENT ' if d['silent'] else ''}{seen}{every}{where}")
    lines.extend(f"PROBLEM: {p}" for p in doc["problems"])
    if not doc["problems"]:
        lines.append("no problems")
    return "\n".join(lines)
