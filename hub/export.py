"""`govedge hub export`: readings for analysts, and the signed originals for auditors.

    csv   one row per measurement: device_id, seq, time, name, unit, value, gateway_id, batch_seq, store_id
          (the batch is gateway_id's store_id's batch_seq; store_id empty for a gateway from before store ids)
    json  JSON Lines, one reading per line with its measurements
    cose  the device-signed messages themselves, as a CBOR sequence (RFC 8742,
          application/cbor-seq): each item a COSE_Sign1 any COSE library verifies

Values are written as the node signed them (a decimal fraction keeps its
digits); times are RFC 3339 in UTC, empty or null when the node's clock was
not set.
"""

from __future__ import annotations

import csv
import datetime
import json
from decimal import Decimal
from typing import BinaryIO, Iterable

from .store import ExportRow

FORMATS = ("csv", "json", "cose")


def parse_time(text: str) -> float:
    """RFC 3339 / ISO 8601 (a date alone is midnight UTC; no zone means UTC), or seconds since 1970."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a time like 2026-11-29T08:00:00Z nor seconds since 1970") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def rfc3339(t: float | None) -> str:
    if t is None:
        return ""
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.isoformat(timespec="milliseconds" if t != int(t) else "seconds").replace("+00:00", "Z")


def _json_value(text: str):
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(Decimal(text)) if Decimal(text).is_finite() else text
    except ArithmeticError:
        return text


def write(rows: Iterable[ExportRow], fmt: str, out: BinaryIO) -> int:
    """Writes the rows; returns how many readings."""
    n = 0
    if fmt == "cose":
        for row in rows:
            out.write(row.message)
            n += 1
        return n
    import io

    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        if fmt == "csv":
            w = csv.writer(text, lineterminator="\n")
            w.writerow(["device_id", "seq", "time", "name", "unit", "value", "gateway_id", "batch_seq", "store_id"])
            for row in rows:
                for name, unit, value in row.measurements:
                    w.writerow([row.device_id, row.seq, rfc3339(row.time), name, unit or "", value,
                                row.gateway_id, row.batch_seq, row.store_id])
                n += 1
        elif fmt == "json":
            for row in rows:
                text.write(json.dumps({
                    "device_id": row.device_id, "seq": row.seq, "time": rfc3339(row.time) or None,
                    "gateway_id": row.gateway_id, "batch_seq": row.batch_seq, "store_id": row.store_id or None,
                    "measurements": [{"name": name, "unit": unit, "value": _json_value(value)}
                                     for name, unit, value in row.measurements],
                }, separators=(",", ":")) + "\n")
                n += 1
        else:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    finally:
        text.detach()
    return n
