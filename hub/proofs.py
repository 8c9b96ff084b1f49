"""`govedge hub proof`: a reading's proof bundle from the hub's store (govedge.core.proof)."""

from __future__ import annotations

from typing import Callable

from govedge.core import batch, proof
from govedge.core.epoch import Epoch, head_of
from govedge.core.proof import ProofUnavailable
from govedge.core.registry import Registry
from govedge.anchor import Receipt

from .config import HubConfig
from .gateways import Gateways
from .store import HubStore


def bundle_for(cfg: HubConfig, device_id: str, seq: int, warn: Callable[[str], None] | None = None) -> dict:
    """The reading's proof bundle. ``warn``: told, in one line, when the reading is flagged (``readings.flag``):
    the bundle is the same, but what it proves is worth less (hub/README.md, "Epochs and proofs")."""
    store = HubStore(cfg.store)
    try:
        found = store.reading_of(device_id, seq)
        if found is None:
            refusal = store.refusal_of(device_id, seq)
            if refusal is not None:
                code, reason = refusal
                raise ProofUnavailable(f"the hub refused reading {device_id} #{seq} ({code}: {reason}); a refused "
                                       "reading is not stored and has no proof")
            raise ProofUnavailable(f"the hub has no reading {device_id} #{seq}")
        message, gateway_id, batch_seq, store_id = found
        cose = store.batch_bytes(gateway_id, batch_seq, store_id)
        b = batch.verify(cose, Gateways.load(cfg.gateways))
        head = head_of(b)
        epoch = store.epoch_of(gateway_id, batch_seq, store_id, head)
        flagged = store.flagged(device_id, seq)
    finally:
        store.close()
    if epoch is None:
        raise ProofUnavailable(f"batch {b.id} is in no epoch the hub has yet: the gateway sends an epoch once the "
                               "chain has confirmed its anchor")
    number, heads, receipt_json, epoch_store = epoch
    bundle = proof.build(message, b.leaves, head, Epoch(gateway_id, number, tuple(heads), epoch_store or None),
                         Receipt.loads(receipt_json))
    if flagged is not None and warn is not None:
        warn(flag_warning(cfg, device_id, seq, *flagged))
    return bundle


def flag_warning(cfg: HubConfig, device_id: str, seq: int, flag: str, key_id: str | None) -> str:
    """One line on a flagged reading: the flag and what it means."""
    if flag != "revoked_key":
        return f"reading {device_id} #{seq} is flagged {flag}"
    since = "?"
    try:
        device = Registry.load(cfg.registry).devices.get(device_id)
        since = next((k.revoked_since for k in device.keys if k.key_id == key_id and k.revoked_since), "?")
    except Exception:  # noqa: BLE001 - the warning stands without the time
        pass
    return (f"reading {device_id} #{seq} is flagged revoked_key: its key {key_id or '?'} was revoked from {since}: "
            "its signature verifies, but the key may have been in other hands")
