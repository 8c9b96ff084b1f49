"""The gateway's batch on the wire (docs/FORMAT.md, "The batch"): build and verify.

A batch is a COSE_Sign1 signed with the gateway's own P-256 key (ES256, kid =
gateway id) over a CBOR map: the gateway id, the id of the gateway's store
(random, made with the store: a gateway whose SD card was replaced numbers its
batches from 0 again, in a new store) and the batch sequence number in that
store (together the batch id the hub de-duplicates by), the RFC 9162 Merkle root over the device
messages it covers, the messages themselves ("raw" mode) or their leaf hashes
("aggregate" mode), and the gateway's aggregates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from . import cose, merkle, wire
from .wire import WireError

FORMAT_VERSION = 1
MODES = ("raw", "aggregate")
MAX_BATCH_BYTES = 8 * 1024 * 1024
STORE_ID = re.compile(r"[0-9a-f]{16}")  # a gateway store's id: 8 random bytes, lowercase hex
BATCH_SIGNER = cose.Signer("unknown_gateway", "gateway {kid!r} is unknown to the registry",
                           "batch signature does not verify with the key of gateway {kid!r}")


@dataclass(frozen=True)
class Batch:
    gateway_id: str
    seq: int
    created: int
    mode: str
    root: bytes
    size: int
    messages: tuple[bytes, ...]  # raw mode: the device-signed messages, in tree order
    leaves: tuple[bytes, ...]  # RFC 9162 leaf hashes of the messages, in tree order
    aggregates: tuple[dict, ...]
    cose: bytes
    store_id: str | None = None  # None: a batch of a gateway from before store ids

    @property
    def id(self) -> str:
        return batch_id(self.gateway_id, self.store_id, self.seq)


def batch_id(gateway_id: str, store_id: str | None, seq: int) -> str:
    """A batch's id as people see it: GATEWAY/STORE/SEQ, or GATEWAY/SEQ for a batch without a store id."""
    return f"{gateway_id}/{store_id}/{seq}" if store_id else f"{gateway_id}/{seq}"


def sign(key: ec.EllipticCurvePrivateKey, gateway_id: str, seq: int, created: int, messages: list[bytes],
         aggregates: list[dict], mode: str = "raw", store_id: str | None = None) -> tuple[bytes, bytes]:
    """The batch's COSE_Sign1 bytes and its Merkle root; ``store_id``: the gateway store's (None: left out,
    as gateways from before store ids did)."""
    if mode not in MODES:
        raise ValueError(f"batch mode must be one of {MODES}, not {mode!r}")
    if store_id is not None and not STORE_ID.fullmatch(store_id):
        raise ValueError(f"store id must be 16 lowercase hex digits, not {store_id!r}")
    leaves = [merkle.leaf_hash(m) for m in messages]
    root = merkle.root(leaves)
    body = {
        "v": FORMAT_VERSION, "gateway": gateway_id, "seq": seq, "created": created, "mode": mode,
        "root": root, "size": len(messages), "aggregates": aggregates,
    }
    if store_id is not None:
        body["store"] = store_id
    if mode == "raw":
        body["messages"] = list(messages)
    else:
        body["leaves"] = leaves
    return cose.sign1(key, gateway_id, cbor2.dumps(body, canonical=True)), root


# docs/FORMAT.md, "The batch": each aggregate's keys and the types of their values
_AGGREGATE_TEXT = ("device_id", "name")
_AGGREGATE_INT = ("window_start", "window_end")
_AGGREGATE_UINT = ("count", "first_seq", "last_seq")
_AGGREGATE_NUMBER = ("min", "max", "last", "mean", "stdev")
_AGGREGATE_KEYS = frozenset(_AGGREGATE_TEXT + _AGGREGATE_INT + _AGGREGATE_UINT + _AGGREGATE_NUMBER + ("unit",))


def _uint(x) -> bool:
    return type(x) is int and 0 <= x <= wire.MAX_SEQUENCE


def _aggregate_fault(a) -> str | None:
    """Why a batch's aggregate is not of the format's shape, or None (everything the hub stores of it)."""
    if not isinstance(a, dict):
        return "not a map"
    missing = [k for k in _AGGREGATE_KEYS if k != "unit" and k not in a]
    if missing:
        return f"has no {sorted(missing)[0]!r}"
    if not a.keys() <= _AGGREGATE_KEYS:
        return "has unexpected keys"
    for k in _AGGREGATE_TEXT + (("unit",) if "unit" in a else ()):
        if not isinstance(a[k], str) or not 0 < len(a[k]) <= 64:
            return f"{k} is not a text of 1 to 64 characters"
    for k in _AGGREGATE_INT:
        if type(a[k]) is not int or not wire.MIN_INTEGER <= a[k] <= wire.MAX_INTEGER:
            return f"{k} is not a 64-bit integer"
    for k in _AGGREGATE_UINT:
        if not _uint(a[k]):
            return f"{k} is not an unsigned 64-bit integer"
    for k in _AGGREGATE_NUMBER:
        v = a[k]
        if not ((type(v) is int and wire.MIN_INTEGER <= v <= wire.MAX_INTEGER)
                or (type(v) is float and math.isfinite(v))):
            return f"{k} is not a finite number"
    return None


def verify(data: bytes, gateway_keys: Callable[[str], Iterable[ec.EllipticCurvePublicKey]],
           device_keys: Callable[[str], Iterable[ec.EllipticCurvePublicKey]] | None = None) -> Batch:
    """Check the gateway's signature, the Merkle root, and (given device_keys) every device message.

    Raises WireError naming the first fault; a device message that fails is named by its position.
    """
    if len(data) > MAX_BATCH_BYTES:
        raise WireError("too_large", f"batch of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
    envelope = cose.verify(data, gateway_keys, BATCH_SIGNER, MAX_BATCH_BYTES, "batch")
    gateway_id = envelope.kid
    body = cose.strict_loads(envelope.payload, "batch payload")
    if not isinstance(body, dict):
        raise WireError("malformed_batch", "batch payload is not a map")
    try:
        version, gw, seq, created, mode = body["v"], body["gateway"], body["seq"], body["created"], body["mode"]
        root, size, aggregates = body["root"], body["size"], body["aggregates"]
    except KeyError as exc:
        raise WireError("malformed_batch", f"batch has no {exc.args[0]!r}") from None
    if version != FORMAT_VERSION:
        raise WireError("malformed_batch", f"batch format version {version!r} is not {FORMAT_VERSION}")
    if gw != gateway_id:
        raise WireError("malformed_batch", f"batch names gateway {gw!r} but is signed by {gateway_id!r}")
    store_id = body.get("store")
    if store_id is not None and not (isinstance(store_id, str) and STORE_ID.fullmatch(store_id)):
        raise WireError("malformed_batch", "batch store is not 16 lowercase hex digits")
    if not _uint(seq) or not isinstance(mode, str) or mode not in MODES or not isinstance(root, bytes) \
            or len(root) != 32:
        raise WireError("malformed_batch", "batch seq, mode or root is malformed")
    if not _uint(created) or not _uint(size):
        raise WireError("malformed_batch", "batch created or size is not an unsigned 64-bit integer")
    if not isinstance(aggregates, list):
        raise WireError("malformed_batch", "batch aggregates must be an array")
    for i, a in enumerate(aggregates):
        fault = _aggregate_fault(a)
        if fault:
            raise WireError("malformed_batch", f"batch {batch_id(gateway_id, store_id, seq)}, aggregate {i}: {fault}")
    messages: tuple[bytes, ...] = ()
    if mode == "raw":
        messages = body.get("messages") or ()
        if not isinstance(messages, list) or not all(isinstance(m, bytes) for m in messages):
            raise WireError("malformed_batch", "batch messages must be byte strings")
        messages = tuple(messages)
        leaves = tuple(merkle.leaf_hash(m) for m in messages)
    else:
        leaves = body.get("leaves") or ()
        if not isinstance(leaves, list) or not all(isinstance(h, bytes) and len(h) == 32 for h in leaves):
            raise WireError("malformed_batch", "batch leaves must be 32-byte hashes")
    leaves = tuple(leaves)
    if len(leaves) != size:
        raise WireError("malformed_batch", f"batch says {size} messages but carries {len(leaves)}")
    if merkle.root(list(leaves)) != root:
        raise WireError("bad_root", f"batch {batch_id(gateway_id, store_id, seq)}: Merkle root does not match its messages")
    if device_keys is not None:
        for i, m in enumerate(messages):
            try:
                wire.verify(m, device_keys)
            except WireError as exc:
                raise WireError(exc.code, f"batch {batch_id(gateway_id, store_id, seq)}, message {i}: {exc.reason}") from None
    return Batch(gateway_id, seq, created, mode, root, size, messages, leaves,
                 tuple(aggregates or ()), bytes(data), store_id)
