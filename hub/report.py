"""`govedge hub report` and `govedge hub anchor-report`: a station's signed report of a period, from the store.

The figures and the form are govedge.core.report's (docs/REPORT.md); here the hub reads its store, streaming:
one pass over each quantity's measurements through the datastream index (device, name, time), one pass
over the readings used in sequence number order for the Merkle commitment; nothing of a year is held but
the hourly sums. Then the report is signed with the hub's key ([hub] key) and, when [anchor] names a
chain, the SHA-256 of the signed report is anchored there and the confirmed receipt kept in the file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from govedge.core import report as method
from govedge.core.install import write
from govedge.core.receipt import AnchorError, Receipt
from govedge.core.registry import Registry

from .config import HubConfig
from .store import HubStore

log = logging.getLogger("govedge.hub.report")

UNITS = {name: q.unit for name, q in method.QUANTITIES.items()}
CONFIRM_WAIT_S = 120.0  # govedge hub report waits this long for the chain to confirm, by default
POLL_S = 2.0


def figures_of(store: HubStore, station: str, period: method.Period, interval_s: int,
               quantities: dict[str, str] = UNITS) -> method.Figures:
    """The station's figures of the period from the store: the values of ``quantities`` (name -> unit), each
    added once (the hub's dashboard asks for the particulate matter alone)."""
    figures = method.Figures(period, interval_s)
    for name, rows in store.report_values(station, quantities, period.start, period.end):
        add = figures.add
        for t, text in rows:  # the store gives the quantity's unit and numbers only: method.countable holds
            add(name, t, Decimal(text))
    return figures


def compute(store: HubStore, station: str, period: method.Period, interval_s: int, hub: str,
            made: int | None = None) -> dict:
    """The report's body, from the store (not signed)."""
    figures = figures_of(store, station, period, interval_s)
    readings = method.Commitment()
    for seq, message in store.report_messages(station, UNITS, period.start, period.end):
        readings.add(seq, message)
    return method.body(station, period, interval_s, figures, readings, hub,
                       int(time.time()) if made is None else made)


@dataclass
class Made:
    path: Path
    body: dict
    signed: bytes
    left_out: dict[str, int]


def make(cfg: HubConfig, station: str, period: method.Period, output: Path, interval_s: int) -> Made:
    """Computes, signs and writes the report of ``station`` (a device of the registry) over ``period``."""
    registry = Registry.load(cfg.registry)
    if station not in registry.devices:
        raise method.ReportError("unknown_station", f"station {station!r} is not a device of the registry "
                                                    f"{cfg.registry} (give a device id, e.g. esp32-0007)")
    key = cfg.signing_key()
    store = HubStore(cfg.store)
    try:
        body = compute(store, station, period, interval_s, method.hub_key_id(key.public_key()))
        left_out = store.report_left_out(station, period.start, period.end)
    finally:
        store.close()
    signed = method.sign(key, body)
    write_report(output, signed, None)
    return Made(output, body, signed, left_out)


def write_report(path: Path, signed: bytes, receipt: Receipt | None) -> None:
    write(Path(path), method.file_bytes(signed, receipt), 0o644)


class _HubSide:
    """What an anchor backend is made from (govedge.anchor.GatewaySide), for the hub: its id and its key."""

    def __init__(self, cfg: HubConfig):
        self.gateway_id = cfg.hub_id
        self.anchor = cfg.anchor
        self._cfg = cfg

    def signing_key(self):
        return self._cfg.signing_key()


def backend_of(cfg: HubConfig):
    from govedge import anchor

    if cfg.anchor_backend == anchor.NONE:
        return None
    return anchor.lookup(cfg.anchor_backend).make(_HubSide(cfg))


def anchor_report(cfg: HubConfig, path: Path, wait_s: float = CONFIRM_WAIT_S, backend=None,
                  say: Callable[[str], None] = lambda line: None) -> Receipt | None:
    """Anchors the report in ``path`` (SHA-256 of its signed bytes) with the hub's [anchor] backend and keeps
    the receipt in the file: submitted once (a pending receipt is kept at once), then asked after until
    confirmed or ``wait_s`` has passed. Run again, it goes on from the receipt in the file; a confirmed one is
    left as it is. Returns the receipt (confirmed or pending); None when no chain is configured."""
    report = method.load_file(Path(path).read_bytes(), str(path))
    backend = backend or backend_of(cfg)
    if backend is None:
        return None
    receipt = report.receipt
    if receipt is not None and receipt.confirmed:
        return receipt
    root = report.anchor_root
    if receipt is None or receipt.root != root:
        receipt = backend.submit(root, 0)
        write_report(path, report.signed, receipt)
        say(f"submitted   {receipt.backend} {receipt.chain}, {receipt.reference}")
    deadline = time.monotonic() + wait_s
    while not receipt.confirmed:
        try:
            confirmed = backend.confirm(receipt)
        except AnchorError as exc:
            if exc.code != "mismatch":
                raise
            log.warning("report %s: %s; submitting it again", path, exc.reason)
            receipt = backend.submit(root, 0)
            write_report(path, report.signed, receipt)
            continue
        if confirmed is not None:
            receipt = confirmed
            write_report(path, report.signed, receipt)
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    return receipt


def summary(made: Made) -> list[str]:
    """What `govedge hub report` prints: the station, the period, the readings and the main figures."""
    b = made.body
    period = method.Period(*b["period"])
    lines = [f"report of {b['station']}, {period.describe()} (UTC days), signed by hub key {b['hub']}",
             f"  file        {made.path}",
             f"  readings    {b['readings']['count']} used, Merkle root {b['readings']['root'].hex()}"]
    if made.left_out["flagged"] or made.left_out["untimed"]:
        lines.append(f"  left out    {made.left_out['flagged']} flagged (a revoked key), {made.left_out['untimed']} "
                     "without a node time")
    word = "annual mean" if period.year else "period mean"
    for name, q in b["quantities"].items():
        valid = sum(1 for h in q["hours"] if h[4])
        line = f"  {name:<6} {q['unit']:<6} {len(q['hours'])} hours with readings, {valid} valid"
        m = q.get("annual_mean") or q.get("period_mean")
        if m is not None:
            days = sum(1 for d in q["days"] if d[1] is not None)
            mean = "none" if m["mean"] is None else f"{_text(m['mean'])}"
            line += f"; {days} valid days; {word} {mean} ({m['valid_hours']} of {m['hours']} hours valid" \
                    f"{'' if m['valid'] else ', under 90 %'})"
            limits = {limit.id: limit for limit in method.LIMITS}
            over = [f"{a['days_over']} day{'' if a['days_over'] == 1 else 's'} over "
                    f"{_text(limits[a['limit']].value)} ({a['limit'].split(':')[0]})"
                    for a in q["assessment"] if "days_over" in a]
            if over:
                line += "; " + ", ".join(over)
        lines.append(line)
    lines.append("  indicative measurements (low-cost sensors), not the reference method: docs/REPORT.md")
    return lines


def _text(d: Decimal) -> str:
    return format(d, "f")


def default_output(station: str, period: method.Period) -> Path:
    return Path(os.getcwd()) / f"report-{station}-{period.describe().replace(' .. ', '--')}.cbor"
