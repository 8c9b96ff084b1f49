"""Epochs and epoch records: a gateway's batches of one period, and the signed record of their anchoring.

The epoch tree's leaves are the batches' heads: a small deterministic CBOR map
of the batch's id, creation time, mode, size and Merkle root, which is what
the epoch needs to commit to every message of every batch. The tree's root is
what the gateway anchors on the govchain; once the chain has confirmed it, the
gateway signs an epoch record (the heads and the receipt) for the hub
(docs/FORMAT.md, "The batch head and the epoch record"; docs/PROOF.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cbor2

from . import cose, merkle, wire
from .batch import BATCH_SIGNER, STORE_ID, Batch, batch_id
from .receipt import Receipt

EPOCH_FORMAT_VERSION = 1
MAX_EPOCH_RECORD_BYTES = 16 * 1024 * 1024
EPOCH_SIGNER = BATCH_SIGNER._replace(forged="epoch record signature does not verify with the key of gateway {kid!r}")


def batch_head(gateway_id: str, seq: int, created: int, mode: str, size: int, root: bytes,
               store_id: str | None = None) -> bytes:
    """The batch's head: what an epoch tree commits to, deterministic CBOR (RFC 8949 section 4.2.1); it names
    the batch's store when the batch does (a batch from before store ids has a head without one)."""
    head = {"gateway": gateway_id, "seq": seq, "created": created, "mode": mode, "size": size, "root": root}
    if store_id is not None:
        head["store"] = store_id
    return cbor2.dumps(head, canonical=True)


def head_of(b: Batch) -> bytes:
    return batch_head(b.gateway_id, b.seq, b.created, b.mode, b.size, b.root, b.store_id)


def epoch_root(heads: Sequence[bytes]) -> bytes:
    return merkle.root([merkle.leaf_hash(h) for h in heads])


@dataclass(frozen=True)
class Epoch:
    """A gateway's epoch: the heads of the batches it made in one period, and their root."""

    gateway_id: str
    number: int  # counted in its store: a fresh store starts at 0 again
    heads: tuple[bytes, ...]
    store_id: str | None = None  # the gateway store that closed it; None: a record from before store ids

    @property
    def root(self) -> bytes:
        return epoch_root(self.heads)


@dataclass(frozen=True)
class EpochRecord:
    """What a gateway tells the hub of an anchored epoch: its batch heads and the receipt."""

    epoch: Epoch
    first: int  # first and last batch sequence number in the epoch
    last: int
    receipt: Receipt
    cose: bytes


def sign_epoch(key, epoch: Epoch, first: int, last: int, receipt: Receipt) -> bytes:
    """The epoch record as the gateway's COSE_Sign1 (docs/PROOF.md, "Epoch records")."""
    body = {"v": EPOCH_FORMAT_VERSION, "gateway": epoch.gateway_id, "epoch": epoch.number, "first": first,
            "last": last, "root": epoch.root, "heads": list(epoch.heads), "anchor": receipt.dumps()}
    if epoch.store_id is not None:
        body["store"] = epoch.store_id
    payload = cbor2.dumps(body, canonical=True)
    return cose.sign1(key, epoch.gateway_id, payload)


def verify_epoch(data: bytes, gateway_keys: Callable[[str], Iterable]) -> EpochRecord:
    """Checks the gateway's signature and that the heads make the root the receipt is for.

    Raises WireError naming the fault."""
    env = cose.verify(data, gateway_keys, EPOCH_SIGNER, MAX_EPOCH_RECORD_BYTES, "epoch record")
    body = cose.strict_loads(env.payload, "epoch record")
    try:
        epoch = Epoch(body["gateway"], body["epoch"], tuple(body["heads"]), body.get("store"))
        first, last, root = body["first"], body["last"], body["root"]
        receipt = Receipt.loads(body["anchor"])
    except Exception as exc:  # noqa: BLE001 - any fault of the body is the same fault
        raise wire.WireError("malformed_epoch", f"epoch record body is malformed: {exc}") from None
    if body.get("v") != EPOCH_FORMAT_VERSION or epoch.gateway_id != env.kid:
        raise wire.WireError("malformed_epoch", "epoch record version or gateway does not match its signer")
    if epoch.store_id is not None and not (isinstance(epoch.store_id, str) and STORE_ID.fullmatch(epoch.store_id)):
        raise wire.WireError("malformed_epoch", "epoch record store is not 16 lowercase hex digits")
    if not all(type(n) is int and 0 <= n <= wire.MAX_SEQUENCE for n in (epoch.number, first, last)) \
            or not all(isinstance(h, bytes) for h in epoch.heads):
        raise wire.WireError("malformed_epoch", "epoch record number, first, last or heads are malformed")
    if not epoch.heads or epoch.root != root or receipt.root != root:
        raise wire.WireError("bad_root", f"epoch {batch_id(env.kid, epoch.store_id, epoch.number)}: its heads, root and receipt disagree")
    return EpochRecord(epoch, first, last, receipt, bytes(data))
