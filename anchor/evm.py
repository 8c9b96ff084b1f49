"""Anchoring on an Ethereum-compatible chain (Hyperledger Besu and the like) over JSON-RPC.

The gateway's account sends each root to the anchor contract
(anchor/contracts/Anchor.sol) in a transaction it signs itself: the key
stays in the gateway, the node only relays raw signed transactions
(``eth_sendRawTransaction``), so no account has to be unlocked on the node. The
contract remembers, per root and account, the block where that account recorded
it and emits one ``Anchored(root, epoch, gateway)`` event for it; ``lookup``
reads both back for the gateway's account, which is all an auditor needs: an RPC
URL, the contract's address and the account (docs/ANCHORING.md). Someone who
copies a root from the mempool and anchors it first only adds a record of their
own: the gateway notices (a warning) and still anchors the root itself.

web3 and eth-account (the [evm] extra) are imported when a backend, a key file or a
deployment needs them, not with this module: the configuration check and `govedge
verify` read this backend's settings without paying for them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govedge.core import redact
from govedge.core.errors import GovedgeError

from . import AnchorError, Receipt, Setting, register

if TYPE_CHECKING:
    from web3 import Web3
    from web3.providers.base import BaseProvider

log = logging.getLogger("govedge.anchor.evm")

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
ARTIFACT_PATH = CONTRACTS_DIR / "Anchor.json"
ANCHORED_EVENT = "Anchored(bytes32,uint64,address)"
# keccak256(ANCHORED_EVENT), as docs/ANCHORING.md lists it (tests/anchor/test_anchor_evm.py computes it again)
ANCHORED_TOPIC = bytes.fromhex("04c6e8902af2455403f7e7d6149fbf152c5b047361b508768fbc613faadf38bf")
ZERO_ROOT = bytes(32)

# how much more gas than the node's estimate a transaction may use
GAS_HEADROOM = 1.25
# what the node says, in the words of geth, Besu, Nethermind, anvil and eth-tester
_NONCE_TOO_LOW = ("nonce too low", "nonce_too_low", "invalid transaction nonce", "nonce is too low")
_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "known_transaction",
                  "already in pool", "alreadyknown")
_REPLACEMENT = ("replacement transaction underpriced", "transaction_replacement_underpriced",
                "replacement_underpriced")
_NO_FUNDS = ("insufficient funds", "upfront cost exceeds", "upfront_cost_exceeds", "cannot afford",
             "exceeds balance", "insufficient balance")
_BUSY = ("txpool is full", "transaction pool is full", "tx_pool_full", "too many requests",
         "header not found", "syncing")


class KeyFileError(GovedgeError, ValueError):
    """The gateway's account key file is missing or does not hold a key; names the file, never its content."""

    code = "key_file"


def load_artifact() -> dict:
    """The compiled anchor contract (ABI and bytecode) committed beside its source."""
    return json.loads(ARTIFACT_PATH.read_text())


def read_key_file(path: str | os.PathLike) -> bytes:
    """The 32-byte secp256k1 key in ``path``: 64 hex digits, optionally with 0x, nothing else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise KeyFileError(f"account key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"account key file {path} cannot be read ({type(e).__name__})") from None
    if text[:2].lower() == "0x":
        text = text[2:]
    if len(text) != 64:
        raise KeyFileError(f"account key file {path} must hold 64 hex digits (a 32-byte key), "
                           f"it holds {len(text)} characters")
    from eth_account import Account

    try:
        key = bytes.fromhex(text)
        Account.from_key(key)
    except ValueError:
        raise KeyFileError(f"account key file {path} does not hold a valid secp256k1 key in hex") from None
    return key


def create_key_file(path: str | os.PathLike) -> str:
    """A new account key in ``path`` (owner-only, never overwritten); returns the account's address."""
    from eth_account import Account

    path = Path(path)
    account = Account.from_key(secrets.token_bytes(32))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"account key file {path} exists already; it is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        f.write(account.key.hex().removeprefix("0x") + "\n")
    return account.address


def _account(key: bytes | str | os.PathLike):
    """A local signing account from raw key bytes or from a key file."""
    from eth_account import Account

    if isinstance(key, (bytes, bytearray)):
        if len(key) != 32:
            raise KeyFileError(f"an account key has 32 bytes, this one has {len(key)}")
        return Account.from_key(bytes(key))
    return Account.from_key(read_key_file(key))


def _endpoint_uri(rpc: Any) -> str | None:
    """The RPC URL as given (with whatever token it holds): what messages must never show."""
    if isinstance(rpc, str):
        return rpc
    provider = getattr(rpc, "provider", rpc)
    uri = getattr(provider, "endpoint_uri", None)
    return str(uri) if uri else None


def _where(rpc: Any) -> str:
    """The node as errors name it: scheme, host and port of its URL (a path may hold an access token)."""
    uri = _endpoint_uri(rpc)
    if uri:
        return redact.endpoint(uri)
    return type(getattr(rpc, "provider", rpc)).__name__


def connect(rpc: str | BaseProvider | Web3, timeout_s: float = 10.0) -> Web3:
    """A Web3 client for an RPC URL, a provider (such as EthereumTesterProvider) or a client itself."""
    from web3 import Web3
    from web3.middleware import ExtraDataToPOAMiddleware

    if isinstance(rpc, Web3):
        w3 = rpc
    elif isinstance(rpc, str):
        # no retries inside web3: an unreachable node is reported at once, the gateway tries later
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": timeout_s},
                                    exception_retry_configuration=None))
    else:
        w3 = Web3(rpc)
    # clique and QBFT chains (Besu) carry signatures in a longer extraData
    if "extradata_to_poa" not in w3.middleware_onion:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0, name="extradata_to_poa")
    return w3


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class _Sender:
    """One account sending raw signed transactions: nonce, gas, fees, and what the node's answers mean."""

    def __init__(self, w3: Web3, account, rpc: Any, gas_price: int | None, error_names: dict[bytes, str]):
        if gas_price is not None and gas_price < 0:
            raise ValueError(f"gas price must be 0 or more wei, not {gas_price}")
        self.w3 = w3
        self.account = account
        self.where = _where(rpc)
        self.endpoint_uri = _endpoint_uri(rpc)  # never shown: every error is redacted against it
        self.gas_price = gas_price
        self.error_names = error_names  # revert selector -> the contract's error name
        self.nonce: int | None = None  # next nonce; None: ask the node for the pending count
        self.lock = threading.Lock()
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with self.talking("asking for the chain id"):
                self._chain_id = self.w3.eth.chain_id
        return self._chain_id

    def talking(self, what: str, sending: bool = False) -> "_Talking":
        return _Talking(self, what, sending)

    def fees(self) -> dict:
        """A configured gas price (0 on free-gas chains) as a legacy price; else EIP-1559 where blocks
        have a base fee, and the node's gas price where they have none."""
        from web3.exceptions import Web3RPCError

        if self.gas_price is not None:
            return {"gasPrice": self.gas_price}
        with self.talking("asking for the fees"):
            base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
            if base_fee is None:
                return {"gasPrice": self.w3.eth.gas_price}
            try:
                tip = self.w3.eth.max_priority_fee
            except Web3RPCError:  # nodes without eth_maxPriorityFeePerGas
                tip = max(self.w3.eth.gas_price - base_fee, 0)
        # twice the base fee: still enough after six full blocks in a row
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    def send(self, to: str | None, data: str, what: str) -> tuple[str, int]:
        """Sign and send; the transaction hash and its nonce. Raises AnchorError."""
        call = {"from": self.account.address, "data": data, **({"to": to} if to else {})}
        with self.lock:
            with self.talking(what):
                gas = int(self.w3.eth.estimate_gas(call) * GAS_HEADROOM)
            fees = self.fees()
            for _ in range(3):
                if self.nonce is None:
                    with self.talking("asking for the account's pending nonce"):
                        self.nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
                nonce = self.nonce
                tx = {"chainId": self.chain_id, "nonce": nonce, "gas": gas, "data": data, "value": 0, **fees}
                if to:
                    tx["to"] = to
                signed = self.account.sign_transaction(tx)
                try:
                    with self.talking(what, sending=True):
                        self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except _NodeSaid as said:
                    if said.kind == "known":  # this very transaction is already in the node's pool
                        self.nonce = nonce + 1
                        return _hex(signed.hash), nonce
                    # "nonce too low", "replacement underpriced": the nonce is taken
                    self.nonce = None
                    log.info("nonce %d of %s is taken (%s); asking the node again",
                             nonce, self.account.address, said.message)
                    continue
                except AnchorError:
                    # the transaction may or may not have arrived: the node's pending count will tell
                    self.nonce = None
                    raise
                self.nonce = nonce + 1
                return _hex(signed.hash), nonce
        raise AnchorError("unreachable", f"{what}: the node at {self.where} kept refusing the nonce for account "
                                         f"{self.account.address}; does another program send from this account?")


class _NodeSaid(Exception):
    """A send the node answered with a message the sender acts on (kind "nonce", "known", "replacement")."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Talking:
    """Turns what web3, requests and the node raise into AnchorError (or _NodeSaid for the sender)."""

    def __init__(self, sender: _Sender, what: str, sending: bool):
        self.sender = sender
        self.what = what
        self.sending = sending  # nonce answers go back to the sender, which asks again

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        try:
            return self._translate(exc)
        except (AnchorError, _NodeSaid) as said:
            # the node's and the network's words may quote the RPC URL, its path and its token
            said.args = (redact.text(said.args[0] if said.args else "", self.sender.endpoint_uri),)
            if isinstance(said, AnchorError):
                said.reason = redact.text(said.reason, self.sender.endpoint_uri)
            else:
                said.message = said.args[0]
            raise

    def _translate(self, exc: BaseException) -> bool:
        if isinstance(exc, (AnchorError, _NodeSaid)):
            raise exc
        import requests
        from eth_utils.exceptions import ValidationError as EthValidationError
        from web3.exceptions import TransactionNotFound, Web3Exception, Web3RPCError

        if isinstance(exc, TransactionNotFound):
            return False  # an answer, not a failure: the caller decides
        what, where = self.what, self.sender.where
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            code = "unreachable" if status >= 500 or status == 429 else "rejected"
            raise AnchorError(code, f"{what}: the node at {where} answered HTTP {status}") from None
        if isinstance(exc, (OSError, TimeoutError)):  # refused, reset, timed out, DNS (requests' errors are OSErrors)
            raise AnchorError("unreachable", f"{what}: the node at {where} does not answer "
                                             f"({_short(exc)})") from None
        if isinstance(exc, _reverted()):
            raise AnchorError("rejected", f"{what}: the contract refused it: {self._revert_reason(exc)}") from None
        if isinstance(exc, (Web3RPCError, EthValidationError)):
            message = _rpc_message(exc)
            lower = message.lower()
            if self.sending:
                for said, words in (("known", _ALREADY_KNOWN), ("nonce", _NONCE_TOO_LOW),
                                    ("replacement", _REPLACEMENT)):
                    if any(s in lower for s in words):
                        raise _NodeSaid(said, message) from None
            if any(s in lower for s in _NO_FUNDS):
                raise AnchorError("rejected", f"{what}: account {self.sender.account.address} cannot pay for the gas "
                                              f"(the node at {where} says: {message})") from None
            if any(s in lower for s in _BUSY):
                raise AnchorError("unreachable", f"{what}: the node at {where} is busy ({message})") from None
            if "revert" in lower:
                raise AnchorError("rejected", f"{what}: the contract refused it: {self._revert_reason(exc)}") from None
            raise AnchorError("rejected", f"{what}: the node at {where} refused it: {message}") from None
        if isinstance(exc, json.JSONDecodeError):
            raise AnchorError("rejected", f"{what}: {where} does not answer in JSON-RPC; is it the node's "
                                          "RPC URL?") from None
        if isinstance(exc, Web3Exception):
            raise AnchorError("rejected", f"{what}: the node at {where} gave an answer that cannot be used "
                                          f"({type(exc).__name__}: {_short(exc)})") from None
        return False

    def _revert_reason(self, exc: Exception) -> str:
        """The contract's error where the revert data names one (in hex, or as bytes from eth-tester),
        else the node's words."""
        said = f"{getattr(exc, 'data', '') or ''} {exc}"
        for selector, name in self.sender.error_names.items():
            if selector.hex() in said or repr(selector)[2:-1] in said:
                return name
        return _short(exc)


def _reverted() -> tuple[type, ...]:
    """What a contract's revert raises: web3's exception, or the demo's in-process chain's own."""
    from web3.exceptions import ContractLogicError

    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # pragma: no cover - eth-tester comes with the demo
        return (ContractLogicError,)
    return (ContractLogicError, TransactionFailed)


def _rpc_message(exc: Exception) -> str:
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return str(response["error"].get("message", response["error"]))
    return str(exc)


def _short(exc: Exception) -> str:
    """The node's or the network's words in a few: what a technician can act on."""
    text = str(exc)
    for needle, words in (("Connection refused", "connection refused"), ("timed out", "no answer in time"),
                          ("Name or service not known", "host name unknown"),
                          ("Temporary failure in name resolution", "host name unknown"),
                          ("Connection reset", "connection reset"), ("Network is unreachable", "network unreachable"),
                          ("No route to host", "no route to host")):
        if needle in text:
            return words
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__


class EvmAnchor:
    """The gateway's anchoring on an EVM chain: ``submit``, ``confirm``, ``lookup`` (govedge.anchor.AnchorBackend).

    ``rpc``: the node's JSON-RPC URL, a web3 provider or a Web3 client.
    ``contract``: the anchor contract's address (``deploy`` installs one).
    ``key``: the gateway's account key file (64 hex digits), or the raw 32 bytes;
    None for an auditor's backend, which looks roots up and sends nothing.
    ``gas_price``: a fixed legacy gas price in wei (0 on free-gas Besu networks);
    None follows the chain: EIP-1559 fees where blocks carry a base fee, else eth_gasPrice.
    ``confirmations``: blocks (counting the one holding the transaction) before a root counts as anchored.
    ``wait_s``: how long ``confirm`` waits for the block, asking every ``poll_s``.
    """

    name = "evm"

    def __init__(self, rpc: str | BaseProvider | Web3, contract: str, key: bytes | str | os.PathLike | None = None, *,
                 gas_price: int | None = None, confirmations: int = 1, wait_s: float = 2.0,
                 poll_s: float = 0.2, timeout_s: float = 10.0):
        from web3 import Web3

        if not Web3.is_address(contract):
            raise ValueError(f"contract address {contract!r} is not a 20-byte hex address")
        if confirmations < 1:
            raise ValueError(f"confirmations must be 1 or more, not {confirmations}")
        self.w3 = connect(rpc, timeout_s)
        self.where = _where(rpc)
        self.contract_address = Web3.to_checksum_address(contract)
        artifact = load_artifact()
        self.contract = self.w3.eth.contract(address=self.contract_address, abi=artifact["abi"])
        self.confirmations = confirmations
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.sender = _Sender(self.w3, None if key is None else _account(key), rpc, gas_price,
                              _error_selectors(artifact))
        self._contract_checked = False

    def __repr__(self) -> str:
        return f"EvmAnchor({self.where}, contract {self.contract_address}, account {self.address})"

    @property
    def address(self) -> str | None:
        """The gateway's account: the ``gateway`` in every Anchored event it sends (None without a key)."""
        return self.sender.account.address if self.sender.account else None

    @property
    def chain(self) -> str:
        return f"eip155:{self.sender.chain_id}"

    # -- the AnchorBackend interface

    def submit(self, root: bytes, epoch: int) -> Receipt:
        """Sends ``anchor(root, epoch)``; a pending receipt, or the confirmed one if the chain has the root already."""
        root = _check_root(root)
        if not 0 <= epoch < 2**64:
            raise ValueError(f"epoch {epoch} does not fit the contract's uint64")
        if self.sender.account is None:
            raise AnchorError("rejected", "no account key was given to this backend: it looks roots up, "
                                          "it cannot anchor them")
        self._check_contract()
        if self._anchored_at(root, self.address):
            anchored = self.lookup(root)
            if anchored is not None:
                return anchored
        self._notice_others(root, "and not by this gateway's account {account}: anchoring it with the "
                                  "gateway's own account")
        data = self.contract.encode_abi("anchor", [root, epoch])
        tx_hash, nonce = self.sender.send(self.contract_address, data, f"anchoring root {root.hex()[:16]}...")
        log.info("root %s of epoch %d sent in transaction %s (nonce %d, account %s)",
                 root.hex(), epoch, tx_hash, nonce, self.address)
        return Receipt(backend=self.name, chain=self.chain, root=root, reference=tx_hash,
                       details={"contract": self.contract_address, "transaction": tx_hash, "nonce": nonce,
                                "epoch": epoch, "gateway": self.address})

    def confirm(self, receipt: Receipt) -> Receipt | None:
        """The receipt as the chain has it once the transaction is in a block deep enough; None while it is not."""
        self._check_receipt(receipt)
        tx_hash = receipt.reference
        deadline = time.monotonic() + self.wait_s
        while True:
            tx_receipt = self._transaction_receipt(tx_hash)
            if tx_receipt is not None and self._deep_enough(tx_receipt["blockNumber"]):
                return self._confirmed(receipt, tx_receipt)
            if time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        if tx_receipt is None and not self._known_transaction(tx_hash):
            with self.sender.lock:
                self.sender.nonce = None  # its nonce is free again: the next transaction takes it
            raise AnchorError("mismatch", f"transaction {tx_hash} is neither in a block nor waiting at the node at "
                                          f"{self.where}; root {receipt.root.hex()} is not anchored by it: "
                                          "submit it again")
        return None

    def lookup(self, root: bytes, anchored_by: str | None = None) -> Receipt | None:
        """What the chain says of ``root`` as anchored by the account ``anchored_by`` (by default this
        backend's own): the contract's block for it and the Anchored event there, or None. An auditor's
        backend given no account gets the root's earliest Anchored event, whoever sent it."""
        root = _check_root(root)
        self._check_contract()
        account = anchored_by or self.address
        if account is None:
            events = self._anchored_events(root)
            if not events:
                return None
            entry = events[0]
        else:
            from web3 import Web3

            if not Web3.is_address(account):
                raise AnchorError("mismatch", f"{account!r} is not an account address")
            block = self._anchored_at(root, account)
            if not block:
                return None
            with self.sender.talking(f"reading the Anchored event of root {root.hex()[:16]}..."):
                logs = self.w3.eth.get_logs({"address": self.contract_address, "fromBlock": block, "toBlock": block,
                                             "topics": [_hex(ANCHORED_TOPIC), _hex(root), None,
                                                        _hex(bytes(12) + bytes.fromhex(account[2:]))]})
            if not logs:
                raise AnchorError("mismatch", f"contract {self.contract_address} says root {root.hex()} was anchored "
                                              f"by {account} in block {block}, but that block has no Anchored event "
                                              "for it")
            entry = logs[0]
        with self.sender.talking(f"reading transaction {_hex(entry['transactionHash'])}"):
            tx_receipt = self.w3.eth.get_transaction_receipt(entry["transactionHash"])
        return self._from_log(entry, tx_receipt)

    def _notice_others(self, root: bytes, words: str) -> None:
        """A warning when other accounts anchored the gateway's root: a copy from the mempool (front-running),
        or another gateway's; either way the gateway's own record is what auditors ask for."""
        others = self.anchored_by_others(root)
        if others:
            log.warning("root %s is on the chain anchored by %s " + words.format(account=self.address),
                        root.hex(), ", ".join(others))

    def anchored_by_others(self, root: bytes) -> list[str]:
        """The accounts other than this backend's that anchored ``root``, earliest first."""
        own = (self.address or "").lower()
        senders = [self.contract.events.Anchored().process_log(e)["args"]["gateway"]
                   for e in self._anchored_events(_check_root(root))]
        return list(dict.fromkeys(s for s in senders if s.lower() != own))

    # -- the chain's answers

    def _check_contract(self) -> None:
        if self._contract_checked:
            return
        with self.sender.talking(f"looking for the anchor contract {self.contract_address}"):
            code = self.w3.eth.get_code(self.contract_address)
        if not code:
            raise AnchorError("rejected", f"there is no contract at {self.contract_address} on {self.chain} "
                                          f"(node {self.where}); deploy the anchor contract first")
        self._contract_checked = True

    def _anchored_at(self, root: bytes, account: str) -> int:
        from web3 import Web3

        with self.sender.talking(f"asking the contract for root {root.hex()[:16]}... of {account}"):
            return self.contract.functions.anchoredAt(root, Web3.to_checksum_address(account)).call()

    def _anchored_events(self, root: bytes) -> list:
        """Every Anchored event of ``root``, in chain order (one per account that anchored it)."""
        with self.sender.talking(f"searching the Anchored events of root {root.hex()[:16]}..."):
            return list(self.w3.eth.get_logs({"address": self.contract_address, "fromBlock": 0, "toBlock": "latest",
                                              "topics": [_hex(ANCHORED_TOPIC), _hex(root)]}))

    def _transaction_receipt(self, tx_hash: str):
        from web3.exceptions import TransactionNotFound

        with self.sender.talking(f"asking for the receipt of transaction {tx_hash}"):
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None

    def _known_transaction(self, tx_hash: str) -> bool:
        from web3.exceptions import TransactionNotFound

        with self.sender.talking(f"asking for transaction {tx_hash}"):
            try:
                return self.w3.eth.get_transaction(tx_hash) is not None
            except TransactionNotFound:
                return False

    def _deep_enough(self, block: int) -> bool:
        if self.confirmations == 1:
            return True
        with self.sender.talking("asking for the latest block"):
            return self.w3.eth.block_number - block + 1 >= self.confirmations

    def _check_receipt(self, receipt: Receipt) -> None:
        if receipt.backend != self.name:
            raise AnchorError("mismatch", f"receipt of backend {receipt.backend!r} given to the {self.name} backend")
        if receipt.chain != self.chain:
            raise AnchorError("mismatch", f"receipt is of chain {receipt.chain}, the node at {self.where} "
                                          f"serves {self.chain}")
        contract = receipt.details.get("contract")
        if contract and contract.lower() != self.contract_address.lower():
            raise AnchorError("mismatch", f"receipt names contract {contract}, this gateway anchors in "
                                          f"{self.contract_address}")

    def _confirmed(self, receipt: Receipt, tx_receipt) -> Receipt:
        tx_hash = receipt.reference
        if tx_receipt["status"] != 1:
            raise AnchorError("rejected", f"transaction {tx_hash} failed in block {tx_receipt['blockNumber']}: "
                                          f"the contract reverted it; root {receipt.root.hex()} is not anchored by it")
        if (tx_receipt["to"] or "").lower() != self.contract_address.lower():
            raise AnchorError("mismatch", f"transaction {tx_hash} went to {tx_receipt['to']}, "
                                          f"not to the anchor contract {self.contract_address}")
        events = [e for e in tx_receipt["logs"]
                  if e["address"].lower() == self.contract_address.lower() and e["topics"]
                  and bytes(e["topics"][0]) == ANCHORED_TOPIC]
        if events:
            confirmed = self._from_log(events[0], tx_receipt)
            self._notice_others(confirmed.root, "as well as by this gateway's account {account} (whose own "
                                                "anchor stands)")
            if confirmed.root != receipt.root:
                raise AnchorError("mismatch", f"transaction {tx_hash} anchored root {confirmed.root.hex()}, "
                                              f"the receipt says {receipt.root.hex()}")
            epoch = receipt.details.get("epoch")
            if epoch is not None and confirmed.details["epoch"] != epoch:
                raise AnchorError("mismatch", f"transaction {tx_hash} anchored root {receipt.root.hex()} for epoch "
                                              f"{confirmed.details['epoch']}, the receipt says epoch {epoch}")
            return confirmed
        # no event: this account had anchored the root before (a transaction sent again after a restart)
        earlier = self.lookup(receipt.root)
        if earlier is None:
            raise AnchorError("mismatch", f"transaction {tx_hash} is in block {tx_receipt['blockNumber']} but "
                                          f"anchored nothing; root {receipt.root.hex()} is not on the chain")
        return earlier

    def _from_log(self, entry, tx_receipt) -> Receipt:
        event = self.contract.events.Anchored().process_log(entry)
        block = entry["blockNumber"]
        with self.sender.talking(f"reading block {block}"):
            block_time = self.w3.eth.get_block(block)["timestamp"]
        tx_hash = _hex(entry["transactionHash"])
        return Receipt(backend=self.name, chain=self.chain, root=bytes(event["args"]["root"]), reference=tx_hash,
                       block=block, block_time=block_time,
                       details={"contract": self.contract_address, "transaction": tx_hash,
                                "log_index": entry["logIndex"], "gas_used": tx_receipt["gasUsed"],
                                "epoch": event["args"]["epoch"], "gateway": event["args"]["gateway"],
                                "block_hash": _hex(entry["blockHash"])})


def _check_root(root: bytes) -> bytes:
    if not isinstance(root, (bytes, bytearray)) or len(root) != 32:
        raise ValueError(f"a root has 32 bytes, not {len(root) if isinstance(root, (bytes, bytearray)) else root!r}")
    return bytes(root)


def _error_selectors(artifact: dict) -> dict[bytes, str]:
    """Revert selector -> "ZeroRoot (The root is all zeros: ...)", from the contract's ABI and its notices."""
    from web3 import Web3

    notices = artifact.get("userdoc", {}).get("errors", {})
    named = {}
    for e in artifact["abi"]:
        if e["type"] == "error":
            signature = f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
            notice = " ".join(n.get("notice", "") for n in notices.get(signature, []))
            named[bytes(Web3.keccak(text=signature)[:4])] = f"{e['name']} ({notice})" if notice else e["name"]
    return named


def deploy(rpc: str | BaseProvider | Web3, key: bytes | str | os.PathLike, *, gas_price: int | None = None,
           wait_s: float = 60.0, timeout_s: float = 10.0) -> str:
    """Installs the anchor contract with the account ``key`` (a key file or raw 32 bytes); its address."""
    from web3.exceptions import TransactionNotFound

    w3 = connect(rpc, timeout_s)
    artifact = load_artifact()
    sender = _Sender(w3, _account(key), rpc, gas_price, _error_selectors(artifact))
    tx_hash, _ = sender.send(None, artifact["bytecode"], "deploying the anchor contract")
    deadline = time.monotonic() + wait_s
    while True:
        with sender.talking(f"asking for the receipt of transaction {tx_hash}"):
            try:
                receipt = w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                pass
        if time.monotonic() >= deadline:
            raise AnchorError("unreachable", f"the anchor contract's transaction {tx_hash} was not in a block "
                                             f"after {wait_s:g} s (node {sender.where})")
        time.sleep(0.1)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise AnchorError("rejected", f"the anchor contract's transaction {tx_hash} failed in block "
                                      f"{receipt['blockNumber']}")
    log.info("anchor contract installed at %s on eip155:%d by %s", receipt["contractAddress"], sender.chain_id,
             sender.account.address)
    return receipt["contractAddress"]


# --- the backend as gateway.toml's [anchor.evm] names it ---


def _for_gateway(gateway) -> EvmAnchor:
    """The gateway's backend: its own account (key_file) sends the roots."""
    a = gateway.anchor
    return EvmAnchor(a["rpc_url"], a["contract"], a["key_file"], gas_price=a.get("gas_price_wei"),
                     confirmations=int(a.get("confirmations", 1)))


def _for_auditor(settings, creator_keys) -> EvmAnchor:
    """An auditor's backend: no account, it looks roots up (who sent them is in each receipt)."""
    return EvmAnchor(settings["rpc_url"], settings["contract"], None)


register(
    "evm", description="Ethereum-compatible chain (Hyperledger Besu style) over JSON-RPC, through the anchor contract",
    settings=(
        Setting("rpc_url", "url", "the govchain node's JSON-RPC URL", required=True, flag="--rpc", audit=True,
                example="http://127.0.0.1:8545"),
        Setting("contract", "string", "the anchor contract's address", required=True, flag="--contract",
                audit=True, example="0x0000000000000000000000000000000000000000"),
        Setting("key_file", "file", "the gateway's Ethereum account key file", required=True, flag="--anchor-key",
                example="anchor.key"),
        Setting("gas_price_wei", "integer", "fixed gas price in wei (0 on free-gas Besu networks)",
                default="the chain's", example=0),
        Setting("confirmations", "integer", "blocks before a root counts as anchored", default=1),
    ),
    make=_for_gateway, audit=_for_auditor, doc="docs/ANCHORING.md")
