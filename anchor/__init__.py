"""Anchoring on the govchain: one interface, two kinds of chain behind it.

The gateway anchors the RFC 9162 tree head of each epoch's batches; an auditor
later checks that the same root is on the chain. Backends:

- ``govedge.anchor.rest``: REST hash anchoring, the way the GovChain NRW chain is
  used (a signed hash-creation transaction posted to an observer node, looked
  up later by its hash; docs/ANCHOR-REST.md).
- ``govedge.anchor.evm``: an Ethereum-compatible permissioned chain (Hyperledger
  Besu style) over JSON-RPC, through a small anchor contract that emits one event
  per root (anchor/contracts/).

Anchoring is asynchronous on both: ``submit`` hands the root to the chain and
returns a pending receipt; ``confirm`` is asked again later until the chain has
put it in a block. ``lookup`` is the auditor's question, asked of the chain
alone: is this root anchored, and where?
"""

from __future__ import annotations

# the receipt, the interface and its error are shared with every stage (govedge.core.receipt)
from govedge.core.receipt import AnchorBackend, AnchorError, Receipt

__all__ = ["AnchorBackend", "AnchorError", "Receipt"]
