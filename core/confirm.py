"""The hub's confirmation to a gateway (docs/FORMAT.md, "Acknowledgements between gateway and hub").

Once the hub has committed a batch or an epoch record to its store, or kept it
durably as refused, it publishes a small CBOR map on the gateway's own
``committed`` topic (govedge.core.topics.committed) naming what it holds now
and how it took it. The gateway forgets an item only on this confirmation,
never on its broker's PUBACK: a broker's acknowledgement is transport, not
custody.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from . import cose, wire
from .batch import MAX_BATCH_BYTES, STORE_ID
from .wire import WireError

VERSION = 1
KINDS = ("batch", "epoch")  # the key of the item's number: "seq" for a batch, "epoch" for an epoch record
NUMBER_KEY = {"batch": "seq", "epoch": "epoch"}
# stored: committed now; duplicate: committed before (a delivery again); rejected: kept in the hub's rejected
# table with its code; waiting: kept in waiting_for_gateway (its gateway unknown yet), verified again on reload
OUTCOMES = ("stored", "duplicate", "rejected", "waiting")
MAX_CONFIRMATION_BYTES = 512


@dataclass(frozen=True)
class Confirmation:
    kind: str  # "batch" or "epoch"
    store_id: str | None  # the gateway store the item names; None: an item from before store ids
    number: int  # the batch's sequence number, or the epoch's number
    outcome: str
    code: str | None = None  # why, for rejected and waiting: the hub's refusal code

    @property
    def what(self) -> str:
        """The item in words: "batch 0123456789abcdef/7", "epoch 2" (no store)."""
        return f"{self.kind} {self.store_id}/{self.number}" if self.store_id else f"{self.kind} {self.number}"


def dumps(c: Confirmation) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2.1)."""
    body = {"v": VERSION, "kind": c.kind, NUMBER_KEY[c.kind]: c.number, "outcome": c.outcome}
    if c.store_id is not None:
        body["store"] = c.store_id
    if c.code is not None:
        body["code"] = c.code
    return cbor2.dumps(body, canonical=True)


def loads(data: bytes) -> Confirmation:
    """Decodes and checks a confirmation; raises WireError (malformed_confirmation) naming what is wrong."""
    if len(data) > MAX_CONFIRMATION_BYTES:
        raise WireError("malformed_confirmation", f"confirmation of {len(data)} bytes exceeds "
                                                  f"{MAX_CONFIRMATION_BYTES}")
    body = cose.strict_loads(data, "confirmation")
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise WireError("malformed_confirmation", f"confirmation is not a map of version {VERSION}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise WireError("malformed_confirmation", f"confirmation kind {kind!r} is not one of {list(KINDS)}")
    number, store_id, outcome, code = body.get(NUMBER_KEY[kind]), body.get("store"), body.get("outcome"), \
        body.get("code")
    if type(number) is not int or not 0 <= number <= wire.MAX_SEQUENCE:
        raise WireError("malformed_confirmation", f"confirmation {NUMBER_KEY[kind]} is not an unsigned 64-bit "
                                                  "integer")
    if store_id is not None and not (isinstance(store_id, str) and STORE_ID.fullmatch(store_id)):
        raise WireError("malformed_confirmation", "confirmation store is not 16 lowercase hex digits")
    if outcome not in OUTCOMES:
        raise WireError("malformed_confirmation", f"confirmation outcome {outcome!r} is not one of {list(OUTCOMES)}")
    if code is not None and not (isinstance(code, str) and 0 < len(code) <= 64):
        raise WireError("malformed_confirmation", "confirmation code is not a text of 1 to 64 characters")
    return Confirmation(kind, store_id, number, outcome, code)


def unverified_item(payload: bytes, kind: str) -> tuple[str | None, int] | None:
    """(store id, number) a batch or epoch record (``kind``) names, without verifying it: what the hub confirms
    of an item it refused; None when the payload does not say."""
    try:
        body = cbor2.loads(wire.decode_envelope(payload, 2 * MAX_BATCH_BYTES, kind).payload)
        number, store_id = body[NUMBER_KEY[kind]], body.get("store")
    except Exception:  # noqa: BLE001 - refused already: only its names are looked for
        return None
    if type(number) is not int or not 0 <= number <= wire.MAX_SEQUENCE:
        return None
    if store_id is not None and not (isinstance(store_id, str) and STORE_ID.fullmatch(store_id)):
        store_id = None
    return store_id, number
