"""Proof bundles: one reading, proven from its device to the govchain (docs/PROOF.md).

The links, each checked on its own so that a failure names the one that broke:

1. ``reading``           the device's COSE_Sign1, decoded
2. ``device_signature``  its signature, with the device's key from the registry
3. ``batch_path``        RFC 9162 inclusion of the message in its batch's Merkle root
4. ``epoch_path``        RFC 9162 inclusion of the batch's head in the epoch root
5. ``anchor_receipt``    the receipt is for that epoch root and says the chain put it in a block
                         (offline that block is the receipt's word: the line says "not checked on the chain")
6. ``chain``             (with a chain to ask) the chain itself holds the root, in that block

The epoch tree's leaves are the batches' heads (govedge.core.epoch), so a bundle
carries about 100 bytes of batch instead of the whole batch, and grows with
the logarithm of the number of readings in the epoch.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Sequence

import cbor2

from . import cose, merkle, wire
from .batch import batch_id
from .epoch import Epoch, batch_head
from .receipt import AnchorBackend, AnchorError, Receipt
from .errors import GovedgeError

FORMAT = "govedge-proof/1"
LINKS = ("reading", "device_signature", "batch_path", "epoch_path", "anchor_receipt", "chain")
# the end of the chain line when no identity (an EVM account, a REST gateway key) was given to check
IDENTITY_NOT_CHECKED = "gateway identity not checked"
# the end of the receipt line when no chain was asked: offline, the block it names is its own word
RECEIPT_NOT_CHECKED = "not checked on the chain"


# govedge verify's exit status, and what it means (README, docs/PROOF.md)
RESULTS = {0: "proven: every link checked holds",
           1: "does not hold: a link of the proof is false",
           2: "usage or input error: the bundle, the registry or an option cannot be used",
           3: "could not check: the chain asked did not answer or refused the question; nothing is "
              "proven or disproven, ask again later or ask another node"}


def status(line: str) -> str:
    """The word printed before a line of ``verify``: "ok", or "--" for what was not checked (the gateway
    identity; offline, the receipt's block)."""
    return "--" if line.endswith((IDENTITY_NOT_CHECKED, RECEIPT_NOT_CHECKED)) else "ok"


class ProofError(GovedgeError, ValueError):
    """A link of a proof that does not hold: ``link`` names it, the reason says how it fails."""

    code = "proof_failed"

    def __init__(self, link: str, reason: str):
        super().__init__(reason, message=f"{link}: {reason}")
        self.link = link


class ProofUnchecked(GovedgeError):
    """A link that could not be checked, neither proven nor disproven: the chain asked could not be
    reached or refused the question. ``link`` names it; asking again later, or another node, may answer."""

    code = "proof_unchecked"

    def __init__(self, link: str, reason: str):
        super().__init__(reason, message=f"{link}: {reason}")
        self.link = link


class ProofUnavailable(GovedgeError, LookupError):
    """No proof can be given for what was asked (not stored, not yet batched, refused); the text says why."""

    code = "proof_unavailable"


def build(message: bytes, batch_leaves: Sequence[bytes], head: bytes, epoch: Epoch,
          receipt: Receipt | None) -> dict:
    """A bundle for the message, which must be a leaf of the batch whose head is given."""
    leaf = merkle.leaf_hash(message)
    index = list(batch_leaves).index(leaf)
    epoch_index = list(epoch.heads).index(head)
    h = cbor2.loads(head)
    epoch_part = {"gateway": epoch.gateway_id, "number": epoch.number}
    if epoch.store_id is not None:
        epoch_part["store"] = epoch.store_id
    return {
        "format": FORMAT,
        "reading": {"message": message.hex()},
        "batch": {"id": batch_id(h["gateway"], h.get("store"), h["seq"]), "head": head.hex(), "leaf_index": index,
                  "path": [p.hex() for p in merkle.inclusion_proof(index, list(batch_leaves))]},
        "epoch": {**epoch_part, "size": len(epoch.heads),
                  "root": epoch.root.hex(), "leaf_index": epoch_index,
                  "path": [p.hex() for p in merkle.inclusion_proof(epoch_index, [merkle.leaf_hash(x)
                                                                                 for x in epoch.heads])]},
        "anchor": receipt.to_json() if receipt else None,
    }


def dumps(bundle: dict) -> str:
    return json.dumps(bundle, indent=1, sort_keys=True) + "\n"


def _hex(value, link: str, what: str, size: int | None = None) -> bytes:
    try:
        data = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ProofError(link, f"{what} is not hex") from None
    if size is not None and len(data) != size:
        raise ProofError(link, f"{what} is {len(data)} bytes, not {size}")
    return data


def _get(d, key: str, link: str):
    if not isinstance(d, dict) or key not in d:
        raise ProofError(link, f"the bundle has no {key!r}")
    return d[key]


def verify(bundle: dict, device_keys: Callable[[str], Iterable], chain: AnchorBackend | None = None,
           account: str | None = None, done: list[str] | None = None) -> list[str]:
    """Checks every link; returns one line per link that holds (see ``status``). Raises ProofError naming the
    first that fails, ProofUnchecked when the chain could not be asked (unreachable, or refusing).

    ``account``: on an EVM chain, the gateway's account; the root must have been anchored by it. ``done``: a list
    to append the lines to, which then also holds the links that held before one failed."""
    done = [] if done is None else done
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ProofError("reading", f"not a proof bundle (format {FORMAT!r} expected)")
    # 1, 2: the reading and its signature
    message = _hex(_get(_get(bundle, "reading", "reading"), "message", "reading"), "reading", "the message")
    try:
        reading = wire.decode_unverified(message)
    except wire.WireError as exc:
        raise ProofError("reading", f"{exc.code}: {exc.reason}") from None
    done.append(f"reading          {reading.device_id} #{reading.seq}, {len(message)} bytes")
    try:
        wire.verify(message, device_keys)
    except wire.WireError as exc:
        raise ProofError("device_signature", f"{exc.code}: {exc.reason}") from None
    done.append(f"device_signature ES256 by {reading.device_id}: valid")
    # 3: the message in its batch
    b = _get(bundle, "batch", "batch_path")
    head_bytes = _hex(_get(b, "head", "batch_path"), "batch_path", "the batch head")
    try:
        head = cose.strict_loads(head_bytes, "the batch head")
        gateway_id, seq, size, root = head["gateway"], head["seq"], head["size"], head["root"]
        store_id = head.get("store")
    except Exception:  # noqa: BLE001 - any fault of the head is the same fault
        raise ProofError("batch_path", "the batch head is not a CBOR map with gateway, seq, size and root") from None
    if batch_head(gateway_id, seq, head.get("created"), head.get("mode"), size, root, store_id) != head_bytes:
        raise ProofError("batch_path", "the batch head is not in its deterministic encoding")
    path = [_hex(p, "batch_path", "a batch path hash", 32) for p in _get(b, "path", "batch_path")]
    index = _get(b, "leaf_index", "batch_path")
    bid = batch_id(gateway_id, store_id, seq)
    if not merkle.verify_inclusion(merkle.leaf_hash(message), index, size, path, root):
        raise ProofError("batch_path", f"the message is not leaf {index} of batch {bid} "
                                       f"(root {root.hex()[:16]}..., {size} messages)")
    done.append(f"batch_path       leaf {index} of {size} in batch {bid}: valid")
    # 4: the batch in its epoch
    e = _get(bundle, "epoch", "epoch_path")
    e_root = _hex(_get(e, "root", "epoch_path"), "epoch_path", "the epoch root", 32)
    e_path = [_hex(p, "epoch_path", "an epoch path hash", 32) for p in _get(e, "path", "epoch_path")]
    e_index, e_size = _get(e, "leaf_index", "epoch_path"), _get(e, "size", "epoch_path")
    if _get(e, "gateway", "epoch_path") != gateway_id:
        raise ProofError("epoch_path", f"the epoch is gateway {e['gateway']!r}'s, the batch {gateway_id!r}'s")
    if not merkle.verify_inclusion(merkle.leaf_hash(head_bytes), e_index, e_size, e_path, e_root):
        raise ProofError("epoch_path", f"batch {bid} is not leaf {e_index} of epoch "
                                       f"{e.get('number')} (root {e_root.hex()[:16]}..., {e_size} batches)")
    of = gateway_id + (f", store {e['store']}" if e.get("store") else "")
    done.append(f"epoch_path       batch {e_index} of {e_size} in epoch {e.get('number')} of {of}: valid")
    # 5: the receipt
    a = bundle.get("anchor")
    if a is None:
        raise ProofError("anchor_receipt", "the bundle has no anchor receipt: the epoch was not anchored yet")
    try:
        receipt = Receipt.from_json(a)
    except (TypeError, ValueError, KeyError) as exc:
        raise ProofError("anchor_receipt", f"the receipt is malformed: {exc}") from None
    if receipt.root != e_root:
        raise ProofError("anchor_receipt", f"the receipt is for root {receipt.root.hex()[:16]}..., "
                                           f"not the epoch's {e_root.hex()[:16]}...")
    if not receipt.confirmed:
        raise ProofError("anchor_receipt", f"the receipt ({receipt.reference}) is not confirmed in a block")
    receipt_line = f"anchor_receipt   {receipt.backend} {receipt.chain}, block {receipt.block}, {receipt.reference}"
    done.append(receipt_line if chain is not None else f"{receipt_line}: {RECEIPT_NOT_CHECKED}")
    # 6: the chain itself, asked for the anchoring of the identity given (else of the one the receipt names)
    if chain is not None:
        identity = account or receipt.details.get("gateway") or receipt.details.get("creator")
        try:
            asked = chain.chain
            if asked != receipt.chain:
                raise ProofError("chain", f"the receipt is of chain {receipt.chain}, the node asked serves {asked}")
            seen = chain.lookup(e_root, anchored_by=identity)
        except AnchorError as exc:
            if exc.code == "mismatch":  # the chain answered, and its answer contradicts the bundle
                raise ProofError("chain", f"{exc.code}: {exc.reason}") from None
            done[-1] = f"{receipt_line}: {RECEIPT_NOT_CHECKED}"  # no answer: the receipt's block is its own word
            raise ProofUnchecked("chain", f"{exc.code}: {exc.reason}") from None
        if seen is None:
            by = f" anchored by {identity}" if identity else ""
            raise ProofError("chain", f"the chain does not hold root {e_root.hex()[:16]}...{by}")
        if seen.block != receipt.block or seen.reference.lower() != receipt.reference.lower():
            raise ProofError("chain", f"the chain holds the root in block {seen.block} ({seen.reference}), "
                                      f"the receipt says block {receipt.block} ({receipt.reference})")
        sender = seen.details.get("gateway") or seen.details.get("creator")
        if account is not None and (sender or "").lower() != account.lower():
            raise ProofError("chain", f"the root was anchored by account {sender}, not the gateway's {account}")
        checked = account is not None or seen.details.get("signature_checked") is True
        done.append(f"chain            {seen.chain} holds the root in block {seen.block}, anchored by {sender}: "
                    + ("valid" if checked else IDENTITY_NOT_CHECKED))
    return done


def check(bundle: dict, device_keys: Callable[[str], Iterable], chain: AnchorBackend | None = None,
          account: str | None = None) -> tuple[list[str], "ProofError | ProofUnchecked | None", int]:
    """``verify``, told as `govedge verify` tells it: the lines of the links that held, the failure (None when
    every link checked holds) and the exit status of RESULTS (0, 1 or 3)."""
    lines: list[str] = []
    try:
        verify(bundle, device_keys, chain, account=account, done=lines)
    except ProofError as exc:
        return lines, exc, 1
    except ProofUnchecked as exc:
        return lines, exc, 3
    return lines, None, 0


def outcome(lines: list[str], failed, code: int, chain_asked: bool) -> dict:
    """govedge verify --json (and the hub's dashboard): every link of LINKS in order with its status ("ok",
    "not checked", "failed", "could not check", "not reached") and what its line says, the exit status and
    its meaning."""
    links = []
    for line in lines:
        link, _, text = line.partition(" ")
        links.append({"link": link, "status": "ok" if status(line) == "ok" else "not checked", "text": text.strip()})
    if failed is not None:
        links.append({"link": failed.link, "status": "failed" if code == 1 else "could not check",
                      "text": failed.reason})
    elif not chain_asked:
        links.append({"link": "chain", "status": "not checked",
                      "text": "the chain was not asked: give --rpc and --contract, or --observer"})
    seen = {entry["link"] for entry in links}
    links += [{"link": link, "status": "not reached", "text": ""} for link in LINKS if link not in seen]
    return {"exit_code": code, "result": RESULTS[code].split(":", 1)[0], "meaning": RESULTS[code], "links": links}
