"""Gas per anchored root: what one epoch costs a gateway on an EVM chain.

A private anvil node (tools/anchor/node_modules), the anchor contract deployed on
it, then ``count`` distinct roots anchored by one gateway account, one
transaction each; the gas every transaction used, as its receipt says.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
from pathlib import Path

from govedge.anchor.evm import EvmAnchor, create_key_file, deploy, load_artifact
from govedge.tools.dev.chain import Anvil


def gas_per_anchor(count: int = 20) -> dict:
    """Median, least and most gas of ``count`` anchor transactions, and the contract's deployment (JSON-able)."""
    with tempfile.TemporaryDirectory(prefix="bench-anchor-") as folder:
        folder = Path(folder)
        with Anvil(folder / "anvil") as node:
            operator = folder / "operator.key"
            gateway_key = folder / "gateway.key"
            node.fund(create_key_file(operator))
            node.fund(create_key_file(gateway_key))
            contract = deploy(node.url, operator)
            deploy_gas = int(node.request("eth_getTransactionReceipt", [_deployment(node, contract)])["gasUsed"], 16)
            gateway = EvmAnchor(node.url, contract, gateway_key)
            gas = []
            for epoch in range(count):
                root = hashlib.sha256(b"bench epoch %d" % epoch).digest()
                gas.append(gateway.confirm(gateway.submit(root, epoch)).details["gas_used"])
            version = node.request("web3_clientVersion")
    compiler = load_artifact()["compiler"]
    return {
        "anchors": count,
        "gas_per_anchor_median": int(statistics.median(gas)),
        "gas_per_anchor_min": min(gas),
        "gas_per_anchor_max": max(gas),
        "deploy_gas": deploy_gas,
        "node": version,
        "compiler": f"{compiler['name']} {compiler['version']}",
        "evm_version": compiler["settings"]["evmVersion"],
    }


def _deployment(node: Anvil, contract: str) -> str:
    """The transaction that created ``contract``: the only one in block 1 of the fresh chain."""
    (tx_hash,) = node.request("eth_getBlockByNumber", ["0x1", False])["transactions"]
    created = node.request("eth_getTransactionReceipt", [tx_hash])["contractAddress"]
    if (created or "").lower() != contract.lower():
        raise LookupError(f"block 1 did not create {contract}")
    return tx_hash


def proof_bytes(readings: int = 1_000_000, per_batch: int = 500) -> dict:
    """Size of one reading's proof bundle (JSON as `govedge gateway proof` writes it) in an epoch of
    ``readings`` readings in batches of ``per_batch``, against the same for an epoch of one batch."""
    from govedge.core import merkle, proof
    from govedge.core.epoch import Epoch, batch_head
    from govedge.anchor import Receipt

    def size(batches: int) -> tuple[int, int]:
        message = bytes(158)  # a reading's size on the wire (govedge bench firmware: message_bytes)
        leaves = [merkle.leaf_hash(message)] + [hashlib.sha256(b"%d" % i).digest() for i in range(per_batch - 1)]
        head = batch_head("gw-bench-01", 0, 1_764_400_000, "raw", per_batch, merkle.root(leaves))
        heads = (head,) + tuple(batch_head("gw-bench-01", i, 1_764_400_000, "raw", per_batch,
                                                 hashlib.sha256(b"root %d" % i).digest())
                                for i in range(1, batches))
        epoch = Epoch("gw-bench-01", 0, heads)
        receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "ab" * 32, block=812, block_time=1_764_400_900,
                          details={"contract": "0x" + "cd" * 20, "transaction": "0x" + "ab" * 32,
                                   "log_index": 0, "gas_used": 46199})
        bundle = proof.build(message, leaves, head, epoch, receipt)
        return len(proof.dumps(bundle).encode()), len(bundle["batch"]["path"]) + len(bundle["epoch"]["path"])

    big, big_hashes = size(readings // per_batch)
    small, small_hashes = size(1)
    return {"proof_readings": readings, "proof_bytes": big, "proof_hashes": big_hashes,
            "proof_bytes_one_batch": small, "proof_hashes_one_batch": small_hashes}


def bench_anchor() -> dict:
    return {**gas_per_anchor(), **proof_bytes()}
