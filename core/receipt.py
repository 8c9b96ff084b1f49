"""What the anchoring stage exchanges with everyone else: the anchor receipt, the backend interface and
its error. The gateway stores receipts, the hub keeps them in epoch records, the auditor's proof check
asks a backend; the backends themselves live in govedge.anchor."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol

from .errors import GovedgeError


class AnchorError(GovedgeError):
    """``code``: "unreachable" (try again later), "rejected" (the chain refused the
    request; trying the same again will not help), "mismatch" (the chain holds
    something other than what the receipt says)."""

    def __init__(self, code: str, reason: str):
        super().__init__(code, reason)


@dataclass(frozen=True)
class Receipt:
    backend: str  # "rest" or "evm"
    chain: str  # which chain: the observer's chain name, or "eip155:<chain id>"
    root: bytes  # the 32 bytes anchored
    reference: str  # the transaction: id from the observer, or 0x-hash of the EVM transaction
    block: int | None = None  # block number once the chain has it; None while pending
    block_time: int | None = None  # the block's time, seconds since 1970
    details: dict = field(default_factory=dict)  # backend-specific (contract address, log index, ...)

    @property
    def confirmed(self) -> bool:
        return self.block is not None

    def to_json(self) -> dict:
        d = asdict(self)
        d["root"] = self.root.hex()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Receipt":
        return cls(**{**d, "root": bytes.fromhex(d["root"])})

    def dumps(self) -> str:
        """The receipt as stored and signed: JSON with sorted keys (epoch records sign this text)."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> "Receipt":
        return cls.from_json(json.loads(text))


class AnchorBackend(Protocol):
    name: str

    def submit(self, root: bytes, epoch: int) -> Receipt:
        """Send the root to the chain; a pending (or already confirmed) receipt. Raises AnchorError."""

    def confirm(self, receipt: Receipt) -> Receipt | None:
        """The confirmed receipt once the chain has the root in a block, else None. Raises AnchorError."""

    def lookup(self, root: bytes, anchored_by: str | None = None) -> Receipt | None:
        """What the chain itself says of this root (the auditor's check), or None if it is not there;
        with ``anchored_by`` (an EVM account, a REST creator), as anchored by that identity."""
