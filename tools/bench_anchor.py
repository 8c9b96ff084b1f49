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

from .anchor.evm import Anvil, EvmAnchor, create_key_file, deploy, load_artifact


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
