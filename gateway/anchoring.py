"""The anchor stage: each closed epoch's root onto the govchain, durable like forwarding.

Epochs wait in the store until the chain has confirmed them: a root is
submitted once (its pending receipt is stored), then asked after until its
block is known (the confirmed receipt is stored). A chain that is away costs
time only: the thread tries again with growing pauses (with jitter, up to ten
minutes) and starts where it left off after a restart. A chain that refuses a
root ("rejected") is logged as an error and asked again after an hour, since
that takes a person (an account without funds, an identity not registered).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Callable

from govedge import anchor
from govedge.anchor import AnchorBackend, AnchorError, Receipt
from govedge.core import redact

from .config import GatewayConfig
from .store import Store
from .supervise import Backoff, run_supervised

log = logging.getLogger("govedge.gateway")

MAX_PAUSE_S = 600.0
REJECTED_PAUSE_S = 3600.0
CONFIRM_EVERY_S = 2.0


def make_backend(cfg: GatewayConfig) -> AnchorBackend | None:
    """The configured backend ([anchor] backend), or None when epochs are not anchored. The REST
    backend signs with the gateway's own key (cfg.signing_key()), the EVM one with its account's."""
    if cfg.anchor_backend == anchor.NONE:
        return None
    return anchor.lookup(cfg.anchor_backend).make(cfg)


class Anchorer(threading.Thread):
    def __init__(self, db_path: Path, backend: AnchorBackend, counters: Counter, synchronous: str = "FULL",
                 on_state: Callable[[str, bool], None] = lambda state, ok: None):
        super().__init__(name="anchor", daemon=True)
        self.db_path = db_path
        self.backend = backend
        self.counters = counters
        self.synchronous = synchronous
        self.on_state = on_state
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.pause = 1.0
        self.backoff = Backoff()  # pauses between restarts after an unexpected exception (govedge.gateway.supervise)

    def run(self) -> None:
        """The anchor stage under supervision: an unexpected exception restarts it (govedge.gateway.supervise)."""
        run_supervised("anchor", self._run, self.stopping, self.counters, self.on_state, self.backoff)

    def _run(self) -> None:
        store = Store(self.db_path, self.synchronous)
        try:
            while not self.stopping.is_set():
                pending = store.epochs_to_anchor(16)
                if not pending:
                    self.on_state(f"every epoch is anchored ({self.backend.name})", True)
                    self.wake.wait(5)
                    self.wake.clear()
                    continue
                wait = self._work(store, pending)
                self.stopping.wait(wait)
        finally:
            store.close()

    def _work(self, store: Store, pending) -> float:
        """One pass over the epochs waiting for the chain; returns how long to wait before the next."""
        for number, root, receipt_json in pending:
            try:
                if receipt_json is None:
                    receipt = self.backend.submit(root, number)
                    log.info("anchor: epoch %d submitted (%s %s)", number, receipt.chain, receipt.reference)
                else:
                    receipt = self.backend.confirm(Receipt.loads(receipt_json))
                    if receipt is None:
                        return CONFIRM_EVERY_S  # not in a block yet: the later epochs wait their turn
                if receipt.root != root:
                    raise AnchorError("mismatch", f"the chain's receipt is for root {receipt.root.hex()[:16]}..., "
                                                  f"not epoch {number}'s {root.hex()[:16]}...")
                with store:
                    store.set_receipt(number, receipt.dumps(), receipt.confirmed)
                if receipt.confirmed:
                    self.counters["epochs_anchored"] += 1
                    log.info("anchor: epoch %d in block %d (%s)", number, receipt.block, receipt.reference)
                self.pause = 1.0
            except AnchorError as exc:
                exc.reason = redact.text(exc.reason)  # what the backend did not redact never reaches a table
                with store:
                    store.anchor_failed(number, f"{exc.code}: {exc.reason}")
                self.counters[f"anchor_errors_{exc.code}"] += 1
                if exc.code == "rejected":
                    log.error("anchor: the chain refused epoch %d: %s; asking again in %d min",
                              number, exc.reason, REJECTED_PAUSE_S // 60)
                    self.on_state(f"PROBLEM: the chain refused epoch {number}: {exc.reason}", False)
                    return REJECTED_PAUSE_S
                if exc.code == "mismatch":  # the receipt is worthless: submit again
                    log.error("anchor: epoch %d: %s; submitting it again", number, exc.reason)
                    with store:
                        store.clear_receipt(number)
                else:
                    log.warning("anchor: epoch %d: chain unreachable (%s); trying again in %.0f s",
                                number, exc.reason, self.pause)
                self.on_state(f"chain unreachable: {exc.reason}", False)
                retry_after = getattr(exc, "retry_after", None)
                wait = max(self.pause * random.uniform(0.8, 1.2), retry_after or 0)
                self.pause = min(self.pause * 2, MAX_PAUSE_S)
                return wait
        self.on_state(f"anchoring on {self.backend.name}", True)
        return 0.2 if len(pending) >= 16 else CONFIRM_EVERY_S

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
