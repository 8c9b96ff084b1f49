"""`govedge gateway proof`: a reading's proof bundle from the gateway's store (govedge.core.proof)."""

from __future__ import annotations

from govedge.core import batch, proof
from govedge.core.epoch import Epoch
from govedge.core.proof import ProofUnavailable
from govedge.anchor import Receipt

from .config import GatewayConfig
from .store import Store


def bundle_for(cfg: GatewayConfig, device_id: str, seq: int) -> dict:
    store = Store(cfg.data_dir / "gateway.db")
    try:
        row = store.reading_row(device_id, seq)
        if row is None:
            raise ProofUnavailable(f"this gateway has no reading {device_id} #{seq}: never received, or "
                                   "delivered and pruned since (the hub keeps it: govedge hub proof)")
        message, batch_seq = row
        if batch_seq is None:
            raise ProofUnavailable(f"{device_id} #{seq} is not in a batch yet: the next batch takes it "
                                   f"(within {cfg.batch_interval_s:g} s)")
        cose, head = store.batch_cose(batch_seq)
        epoch = store.epoch_of_batch(batch_seq)
        if head is None or epoch is None:
            raise ProofUnavailable(f"batch {cfg.gateway_id}/{batch_seq} is in the open epoch: it closes "
                                   f"{cfg.epoch_s:g} s after its first batch, then it is anchored")
        number, heads, receipt_json = epoch
        store_id = store.store_id
    finally:
        store.close()
    public = cfg.signing_key().public_key()
    b = batch.verify(cose, lambda gw: [public] if gw == cfg.gateway_id else [])
    receipt = Receipt.loads(receipt_json) if receipt_json else None
    return proof.build(message, b.leaves, head, Epoch(cfg.gateway_id, number, tuple(heads), store_id), receipt)
