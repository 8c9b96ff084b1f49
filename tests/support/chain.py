"""A real EVM node for the anchoring tests: anvil (npm @foundry-rs/anvil, installed in
anchor/node_modules by `make test`) on a free loopback port, with accounts
funded on it, and the contract's storage as the chain holds it."""

from __future__ import annotations

from pathlib import Path

from Crypto.Hash import keccak as _keccak

from govedge.anchor.evm import create_key_file
from govedge.tools.dev.chain import Anvil

CHAIN_ID = 31337


def start_anvil(folder: Path, **options) -> Anvil:
    """anvil on 127.0.0.1 and a free port, chain id CHAIN_ID, silent; returns once it answers eth_chainId.
    ``state=True`` keeps the chain across stop() and start()."""
    return Anvil(folder, chain_id=CHAIN_ID, **options).start()


def funded_key(node: Anvil, path: Path, wei: int = 10**21) -> Path:
    """A new account key file at ``path`` whose account holds ``wei`` on the node."""
    node.fund(create_key_file(path), wei)
    return path


def keccak(data: bytes) -> bytes:
    """Keccak-256 from pycryptodome: the tests' own, not web3's."""
    h = _keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def anchored_block_slot(root: bytes, account: str) -> str:
    """The storage slot of ``anchoredBlock[root][account]`` in Anchor.sol (a mapping of mappings in slot 0:
    keccak(account . keccak(root . slot)))."""
    inner = keccak(root + bytes(32))
    return "0x" + keccak(bytes(12) + bytes.fromhex(account.removeprefix("0x")) + inner).hex()
