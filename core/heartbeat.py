"""The gateway's status record (heartbeat) on the wire (docs/FORMAT.md, "The gateway's status record").

Every ``[hub] heartbeat_s`` seconds, and once when it connects, a gateway tells
the hub how it is: a COSE_Sign1 signed with its batch key (kid = gateway id)
over a CBOR map of its backlog (readings waiting for a batch, batches the hub
has not confirmed, epochs not anchored), its store (free bytes, whether it
refuses messages), its clock, and each node's last seen time and sequence
number. Without it a quiet site and a dead gateway look the same from the hub.

The record's ``seq`` only grows within a gateway store (the store's start count
in the high 32 bits, a count within the run in the low 32), so the hub refuses
one it has seen, or an older one, replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import cbor2

from . import cose, wire
from .batch import BATCH_SIGNER, STORE_ID
from .wire import WireError

VERSION = 1
MAX_HEARTBEAT_BYTES = 64 * 1024  # what the hub reads of one; MAX_DEVICES of the longest ids fit
MAX_DEVICES = 500  # nodes listed in one record, the most recently seen first; "devices_total" counts them all
MAX_ERROR_CHARS = 300  # of the last anchoring error (redacted before it is signed)
MAX_VERSION_CHARS = 64
HEARTBEAT_SIGNER = BATCH_SIGNER._replace(
    forged="status record signature does not verify with the key of gateway {kid!r}")

_KEYS = frozenset({"v", "gateway", "store", "seq", "time", "heartbeat_s", "version", "unbatched", "unconfirmed",
                   "oldest_unconfirmed", "unanchored", "oldest_unanchored", "anchor_error", "free_bytes",
                   "refusing", "clock_synchronized", "devices", "devices_total"})


@dataclass(frozen=True)
class DeviceSeen:
    """A node as its gateway last saw it: the highest sequence number it accepted, when that reading came (the
    gateway's clock) and the time the node gave it (its own clock: a backlog sent in a burst keeps its times);
    either time None when unknown (the reading is gone from the store, or the node's clock was not set)."""

    device_id: str
    last_seen: int | None
    last_seq: int
    node_time: int | None = None


@dataclass(frozen=True)
class Heartbeat:
    gateway_id: str
    store_id: str
    seq: int  # grows within the store: a replay is refused
    time: int  # the gateway's clock when it signed, seconds since 1970
    heartbeat_s: int  # how often it sends one: the hub calls it silent after a few of these
    version: str  # its software's version
    unbatched: int  # readings waiting for a batch
    unconfirmed: int  # batches the hub has not confirmed
    oldest_unconfirmed: int | None  # the oldest one's creation time
    unanchored: int  # epochs closed and not confirmed on the chain
    oldest_unanchored: int | None  # the oldest one's close time
    anchor_error: str | None  # the last anchoring error of the oldest unanchored epoch, redacted
    free_bytes: int  # free space of the store's file system
    refusing: bool  # the gateway acknowledges nothing now (disk short of its reserve, quota full)
    clock_synchronized: bool | None  # None: nobody can tell
    devices: tuple[DeviceSeen, ...]
    devices_total: int  # nodes the gateway knows; more than len(devices) when the list was cut at MAX_DEVICES
    cose: bytes = b""

    def state(self) -> dict:
        """The record's fields as JSON-ready values (what the hub keeps and `govedge hub status` shows)."""
        return {"store_id": self.store_id, "seq": self.seq, "time": self.time, "heartbeat_s": self.heartbeat_s,
                "version": self.version, "unbatched": self.unbatched, "unconfirmed_batches": self.unconfirmed,
                "oldest_unconfirmed_batch": self.oldest_unconfirmed, "epochs_unanchored": self.unanchored,
                "oldest_unanchored_epoch": self.oldest_unanchored, "anchor_error": self.anchor_error,
                "store_free_bytes": self.free_bytes, "store_refusing": self.refusing,
                "clock_synchronized": self.clock_synchronized, "devices_total": self.devices_total}


def sign(key, h: Heartbeat) -> bytes:
    """The record as the gateway's COSE_Sign1; its devices cut to the MAX_DEVICES most recently seen."""
    if not STORE_ID.fullmatch(h.store_id):
        raise ValueError(f"store id must be 16 lowercase hex digits, not {h.store_id!r}")
    devices = sorted(h.devices, key=lambda d: (d.last_seen is None, -(d.last_seen or 0), d.device_id))
    body = {"v": VERSION, "gateway": h.gateway_id, "store": h.store_id, "seq": h.seq, "time": h.time,
            "heartbeat_s": h.heartbeat_s, "version": h.version[:MAX_VERSION_CHARS], "unbatched": h.unbatched,
            "unconfirmed": h.unconfirmed, "oldest_unconfirmed": h.oldest_unconfirmed, "unanchored": h.unanchored,
            "oldest_unanchored": h.oldest_unanchored,
            "anchor_error": None if h.anchor_error is None else h.anchor_error[:MAX_ERROR_CHARS],
            "free_bytes": h.free_bytes, "refusing": h.refusing, "clock_synchronized": h.clock_synchronized,
            "devices": {d.device_id: [d.last_seen, d.last_seq, d.node_time] for d in devices[:MAX_DEVICES]},
            "devices_total": max(h.devices_total, len(h.devices))}
    return cose.sign1(key, h.gateway_id, cbor2.dumps(body, canonical=True))


def _uint(x) -> bool:
    return type(x) is int and 0 <= x <= wire.MAX_SEQUENCE


def _fault(body) -> str | None:
    """Why a record's body is not of the format's shape, or None."""
    if not isinstance(body, dict):
        return "is not a map"
    missing = sorted(_KEYS - body.keys())
    if missing:
        return f"has no {missing[0]!r}"
    extra = cose.unexpected_labels(body, _KEYS)
    if extra:
        return f"has unexpected keys {', '.join(extra)}"
    if body["v"] != VERSION or type(body["v"]) is not int:
        return f"version is {cose.show(body['v'])}, not {VERSION}"
    if not (isinstance(body["store"], str) and STORE_ID.fullmatch(body["store"])):
        return "store is not 16 lowercase hex digits"
    for k in ("seq", "time", "heartbeat_s", "unbatched", "unconfirmed", "unanchored", "free_bytes", "devices_total"):
        if not _uint(body[k]):
            return f"{k} is not an unsigned 64-bit integer"
    for k in ("oldest_unconfirmed", "oldest_unanchored"):
        if body[k] is not None and not _uint(body[k]):
            return f"{k} is neither null nor an unsigned 64-bit integer"
    if not (isinstance(body["version"], str) and 0 < len(body["version"]) <= MAX_VERSION_CHARS):
        return f"version is not a text of 1 to {MAX_VERSION_CHARS} characters"
    if body["anchor_error"] is not None and not (isinstance(body["anchor_error"], str)
                                                  and len(body["anchor_error"]) <= MAX_ERROR_CHARS):
        return f"anchor_error is neither null nor a text of at most {MAX_ERROR_CHARS} characters"
    if type(body["refusing"]) is not bool or body["clock_synchronized"] not in (True, False, None):
        return "refusing or clock_synchronized is not a boolean"
    devices = body["devices"]
    if not isinstance(devices, dict) or len(devices) > MAX_DEVICES:
        return f"devices is not a map of at most {MAX_DEVICES} nodes"
    for device, seen in devices.items():
        if not (isinstance(device, str) and wire.DEVICE_ID.match(device)):
            return f"devices names {cose.show(device)}, which is not a device id"
        if not (isinstance(seen, list) and len(seen) == 3 and (seen[0] is None or _uint(seen[0]))
                and _uint(seen[1]) and (seen[2] is None or _uint(seen[2]))):
            return (f"devices entry of {device!r} is not [last seen time or null, last sequence number, "
                    "node time or null]")
    if body["devices_total"] < len(devices):
        return "devices_total is less than the nodes listed"
    return None


def verify(data: bytes, gateway_keys: Callable[[str], Iterable]) -> Heartbeat:
    """Checks the gateway's signature and the record's shape; raises WireError naming the fault
    (malformed_heartbeat, or the envelope's codes: bad_signature, unknown_gateway...)."""
    env = cose.verify(data, gateway_keys, HEARTBEAT_SIGNER, MAX_HEARTBEAT_BYTES, "status record")
    body = cose.strict_loads(env.payload, "status record")
    fault = _fault(body)
    if fault is not None:
        raise WireError("malformed_heartbeat", f"status record of {env.kid!r} {fault}")
    if body["gateway"] != env.kid:
        raise WireError("malformed_heartbeat", f"status record names gateway {cose.show(body['gateway'])} but is "
                                               f"signed by {env.kid!r}")
    devices = tuple(DeviceSeen(d, *seen) for d, seen in body["devices"].items())
    return Heartbeat(env.kid, body["store"], body["seq"], body["time"], body["heartbeat_s"], body["version"],
                     body["unbatched"], body["unconfirmed"], body["oldest_unconfirmed"], body["unanchored"],
                     body["oldest_unanchored"], body["anchor_error"], body["free_bytes"], body["refusing"],
                     body["clock_synchronized"], devices, body["devices_total"], bytes(data))
