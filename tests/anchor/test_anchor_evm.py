"""EVM anchoring (govedge.anchor.evm) against real chains: anvil over JSON-RPC, and
web3's in-process EthereumTesterProvider that the demo runs. The Anchored event
and the contract's answers are also read back without web3's contract layer:
raw JSON-RPC, topic hashes from pycryptodome, decoding by eth-abi."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import os
import socket
import subprocess
import threading

import eth_abi
import pytest
from web3 import EthereumTesterProvider

from support.chain import CHAIN_ID, anchored_block_slot, funded_key, keccak, start_anvil
from govedge.anchor import AnchorError, Receipt
from govedge.anchor.evm import (ANCHORED_EVENT, ANCHORED_TOPIC, ARTIFACT_PATH, CONTRACTS_DIR, EvmAnchor, KeyFileError,
                                create_key_file, deploy, read_key_file)
from govedge.tools.dev.bench_anchor import gas_per_anchor


def root(n: int) -> bytes:
    return keccak(b"epoch tree head %d" % n)


def test_the_anchored_topic_is_the_keccak_of_the_event_signature():
    assert ANCHORED_TOPIC == keccak(ANCHORED_EVENT.encode())


@pytest.fixture
def anvil(tmp_path):
    node = start_anvil(tmp_path / "anvil")
    yield node
    node.stop()


@pytest.fixture
def installed(anvil, tmp_path):
    """The anchor contract deployed by an operator account; a funded gateway account key."""
    contract = deploy(anvil.url, funded_key(anvil, tmp_path / "operator.key"))
    return contract, funded_key(anvil, tmp_path / "gateway.key")


def backend(anvil, installed, **options) -> EvmAnchor:
    contract, key = installed
    return EvmAnchor(anvil.url, contract, key, **options)


def tx(anvil, tx_hash: str) -> dict:
    return anvil.request("eth_getTransactionByHash", [tx_hash])


def test_a_root_is_submitted_confirmed_and_found_by_lookup(anvil, installed):
    gateway = backend(anvil, installed)
    pending = gateway.submit(root(1), 1)
    assert not pending.confirmed
    assert pending.backend == "evm" and pending.chain == f"eip155:{CHAIN_ID}" and pending.root == root(1)

    confirmed = gateway.confirm(pending)
    assert confirmed.confirmed and confirmed.block >= 2 and confirmed.block_time > 1_600_000_000
    assert confirmed.reference == pending.reference
    assert confirmed.details["contract"] == installed[0]
    assert confirmed.details["transaction"] == pending.reference
    assert confirmed.details["log_index"] == 0 and 40_000 < confirmed.details["gas_used"] < 60_000
    assert confirmed.details["epoch"] == 1 and confirmed.details["gateway"] == gateway.address

    # the auditor's question, with a backend of its own that only reads
    auditor = EvmAnchor(anvil.url, installed[0])
    assert auditor.lookup(root(1)) == confirmed
    with pytest.raises(AnchorError, match="no account key"):
        auditor.submit(root(2), 2)
    # receipts travel as JSON
    assert Receipt.from_json(json.loads(json.dumps(confirmed.to_json()))) == confirmed


def test_many_anchors_in_a_row_take_consecutive_nonces(anvil, installed):
    gateway = backend(anvil, installed)
    receipts = [gateway.submit(root(n), n) for n in range(12)]
    assert [int(tx(anvil, r.reference)["nonce"], 16) for r in receipts] == list(range(12))
    confirmed = [gateway.confirm(r) for r in receipts]
    assert all(c.confirmed for c in confirmed)
    assert [gateway.lookup(root(n)).reference for n in range(12)] == [r.reference for r in receipts]


def test_a_restarted_backend_continues_the_nonces_of_transactions_still_waiting(anvil, installed):
    anvil.request("evm_setAutomine", [False])
    first = backend(anvil, installed, wait_s=0)
    waiting = [first.submit(root(n), n) for n in range(3)]
    assert all(first.confirm(r) is None for r in waiting)  # nothing mined yet

    restarted = backend(anvil, installed, wait_s=0)  # the gateway after a restart: a new object
    waiting += [restarted.submit(root(n), n) for n in range(3, 6)]
    assert [int(tx(anvil, r.reference)["nonce"], 16) for r in waiting] == list(range(6))

    anvil.request("evm_mine")
    assert [restarted.confirm(r).root for r in waiting] == [root(n) for n in range(6)]


def test_a_nonce_taken_by_another_sender_is_asked_again(anvil, installed):
    one, other = backend(anvil, installed), backend(anvil, installed)
    one.submit(root(1), 1)  # nonce 0
    other.submit(root(2), 2)  # nonce 1, which `one` does not know of
    third = one.submit(root(3), 3)  # the node says "nonce too low"; asked again: nonce 2
    assert int(tx(anvil, third.reference)["nonce"], 16) == 2
    assert one.confirm(third).root == root(3)

    # while the other's transaction still waits in the pool: "replacement transaction underpriced"
    anvil.request("evm_setAutomine", [False])
    other.submit(root(4), 4)  # nonce 3
    fifth = one.submit(root(5), 5)  # `one` thinks 3 is next
    assert int(tx(anvil, fifth.reference)["nonce"], 16) == 4
    anvil.request("evm_mine")
    assert one.confirm(fifth).root == root(5)


def test_a_transaction_the_node_already_has_is_not_sent_twice(anvil, installed):
    anvil.request("evm_setAutomine", [False])
    gateway = backend(anvil, installed, wait_s=0)
    sent = gateway.submit(root(1), 1)
    gateway.sender.nonce = 0  # as after an answer lost on the way back: the same transaction is signed again
    again = gateway.submit(root(1), 1)
    assert again.reference == sent.reference  # the node answered "already imported"; same transaction
    anvil.request("evm_mine")
    assert gateway.confirm(again).block is not None
    assert int(tx(anvil, gateway.submit(root(2), 2).reference)["nonce"], 16) == 1


def test_an_unreachable_node_is_reported_and_anchoring_resumes_when_it_is_back(tmp_path):
    node = start_anvil(tmp_path / "anvil", state=True)
    try:
        contract = deploy(node.url, funded_key(node, tmp_path / "operator.key"))
        key = funded_key(node, tmp_path / "gateway.key")
        gateway = EvmAnchor(node.url, contract, key)
        first = gateway.confirm(gateway.submit(root(1), 1))

        node.stop()
        started_while_down = EvmAnchor(node.url, contract, key)
        for attempt in (lambda: gateway.submit(root(2), 2), lambda: gateway.confirm(first),
                        lambda: gateway.lookup(root(1)), lambda: started_while_down.submit(root(2), 2)):
            with pytest.raises(AnchorError) as down:
                attempt()
            assert down.value.code == "unreachable"
            assert f"127.0.0.1:{node.port}" in down.value.reason and "does not answer" in down.value.reason

        node.start()  # same port, same chain
        second = gateway.confirm(gateway.submit(root(2), 2))
        assert second.root == root(2) and int(tx(node, second.reference)["nonce"], 16) == 1
        assert gateway.lookup(root(1)) == first
        assert started_while_down.lookup(root(2)) == second
    finally:
        node.stop()


def test_a_node_that_accepts_but_never_answers_is_unreachable(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        create_key_file(tmp_path / "gateway.key")
        gateway = EvmAnchor(url, "0x" + "11" * 20, tmp_path / "gateway.key", timeout_s=0.5)
        with pytest.raises(AnchorError) as hung:
            gateway.lookup(root(1))
        assert hung.value.code == "unreachable" and "no answer in time" in hung.value.reason


def test_a_url_that_is_not_a_json_rpc_node_is_rejected():
    class WebPage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>city portal</body></html>")

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), WebPage) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            auditor = EvmAnchor("http://127.0.0.1:%d/rpc" % server.server_address[1], "0x" + "11" * 20)
            with pytest.raises(AnchorError) as wrong:
                auditor.lookup(root(1))
            assert wrong.value.code == "rejected" and "does not answer in JSON-RPC" in wrong.value.reason
        finally:
            server.shutdown()


def test_the_zero_root_is_refused_by_the_contract_and_costs_no_nonce(anvil, installed):
    gateway = backend(anvil, installed)
    with pytest.raises(AnchorError) as refused:
        gateway.submit(bytes(32), 1)
    assert refused.value.code == "rejected"
    assert "ZeroRoot" in refused.value.reason and "all zeros" in refused.value.reason
    assert int(tx(anvil, gateway.submit(root(1), 1).reference)["nonce"], 16) == 0


def test_an_account_without_ether_is_rejected(anvil, installed, tmp_path):
    create_key_file(tmp_path / "poor.key")
    poor = EvmAnchor(anvil.url, installed[0], tmp_path / "poor.key")
    with pytest.raises(AnchorError) as refused:
        poor.submit(root(1), 1)
    assert refused.value.code == "rejected"
    assert poor.address in refused.value.reason and "cannot pay for the gas" in refused.value.reason


def test_free_gas_chain_with_a_configured_gas_price_of_zero(tmp_path):
    # Besu permissioned networks often run with gas price 0: no ether needed at all
    node = start_anvil(tmp_path / "anvil", extra_args=("--base-fee", "0", "--gas-price", "0",
                                                       "--disable-min-priority-fee"))
    try:
        create_key_file(tmp_path / "operator.key")
        create_key_file(tmp_path / "gateway.key")
        contract = deploy(node.url, tmp_path / "operator.key", gas_price=0)
        gateway = EvmAnchor(node.url, contract, tmp_path / "gateway.key", gas_price=0)
        confirmed = gateway.confirm(gateway.submit(root(1), 1))
        sent = tx(node, confirmed.reference)
        assert sent["type"] == "0x0" and int(sent["gasPrice"], 16) == 0
        assert node.request("eth_getBalance", [gateway.address, "latest"]) == "0x0"
    finally:
        node.stop()


def test_fees_follow_the_chain_eip1559_with_base_fee_legacy_without(anvil, installed, tmp_path):
    london = backend(anvil, installed)
    assert tx(anvil, london.submit(root(1), 1).reference)["type"] == "0x2"
    assert tx(anvil, backend(anvil, installed, gas_price=3 * 10**9).submit(root(2), 2).reference)["type"] == "0x0"

    berlin = start_anvil(tmp_path / "berlin", extra_args=("--hardfork", "berlin"))  # blocks without a base fee
    try:
        contract = deploy(berlin.url, funded_key(berlin, tmp_path / "berlin-operator.key"))
        gateway = EvmAnchor(berlin.url, contract, funded_key(berlin, tmp_path / "berlin-gateway.key"))
        sent = tx(berlin, gateway.confirm(gateway.submit(root(3), 3)).reference)
        assert sent["type"] == "0x0" and int(sent["gasPrice"], 16) == int(berlin.request("eth_gasPrice"), 16)
    finally:
        berlin.stop()


def test_confirm_waits_for_the_block_and_for_the_confirmations_asked(anvil, installed):
    anvil.request("evm_setAutomine", [False])
    gateway = backend(anvil, installed, wait_s=0)
    pending = gateway.submit(root(1), 1)
    assert gateway.confirm(pending) is None
    anvil.request("evm_setIntervalMining", [1])  # a block a second, like a Besu network
    assert backend(anvil, installed, wait_s=5, poll_s=0.1).confirm(pending).root == root(1)

    anvil.request("evm_setIntervalMining", [0])
    deep = backend(anvil, installed, wait_s=0, confirmations=3)
    sent = deep.submit(root(2), 2)
    anvil.request("evm_mine")
    assert deep.confirm(sent) is None  # in a block, but only one deep
    anvil.request("evm_mine")
    anvil.request("evm_mine")
    assert deep.confirm(sent).root == root(2)


def test_a_dropped_transaction_is_a_mismatch_and_the_root_goes_out_again(anvil, installed):
    anvil.request("evm_setAutomine", [False])
    gateway = backend(anvil, installed, wait_s=0)
    lost = gateway.submit(root(1), 1)
    anvil.request("anvil_dropTransaction", [lost.reference])
    with pytest.raises(AnchorError) as gone:
        gateway.confirm(lost)
    assert gone.value.code == "mismatch" and "submit it again" in gone.value.reason
    again = gateway.submit(root(1), 1)
    assert int(tx(anvil, again.reference)["nonce"], 16) == 0  # the dropped nonce is used again, no gap
    anvil.request("evm_mine")
    assert gateway.confirm(again).root == root(1)


def test_lookup_of_a_root_never_anchored_is_none(anvil, installed):
    gateway = backend(anvil, installed)
    gateway.confirm(gateway.submit(root(1), 1))
    assert gateway.lookup(root(2)) is None


def test_a_contract_address_without_a_contract_is_rejected(anvil, installed):
    nowhere = EvmAnchor(anvil.url, "0x" + "42" * 20, installed[1])
    with pytest.raises(AnchorError) as missing:
        nowhere.submit(root(1), 1)
    assert missing.value.code == "rejected" and "no contract at 0x4242" in missing.value.reason


def test_confirm_detects_a_receipt_that_says_something_else_than_the_chain(anvil, installed):
    gateway = backend(anvil, installed)
    sent = gateway.submit(root(1), 1)
    for altered, words in ((dataclasses.replace(sent, root=root(2)), "anchored root"),
                           (dataclasses.replace(sent, details={**sent.details, "epoch": 9}), "epoch 9"),
                           (dataclasses.replace(sent, chain="eip155:1"), "serves eip155:31337"),
                           (dataclasses.replace(sent, reference="0x" + "ab" * 32), "neither in a block")):
        with pytest.raises(AnchorError) as wrong:
            gateway.confirm(altered)
        assert wrong.value.code == "mismatch" and words in wrong.value.reason
    assert gateway.confirm(sent).root == root(1)


def test_lookup_detects_contract_state_without_its_event(anvil, installed):
    gateway = backend(anvil, installed)
    first = gateway.confirm(gateway.submit(root(1), 1))
    # the chain's storage says root 2 was anchored in block 1, where no event for it exists
    anvil.request("anvil_setStorageAt", [installed[0], anchored_block_slot(root(2), gateway.address),
                                         "0x" + (1).to_bytes(32, "big").hex()])
    with pytest.raises(AnchorError) as tampered:
        gateway.lookup(root(2))
    assert tampered.value.code == "mismatch" and "no Anchored event" in tampered.value.reason
    # root 1 moved to another block
    anvil.request("anvil_setStorageAt", [installed[0], anchored_block_slot(root(1), gateway.address),
                                         "0x" + (first.block - 1).to_bytes(32, "big").hex()])
    with pytest.raises(AnchorError) as moved:
        gateway.lookup(root(1))
    assert moved.value.code == "mismatch"


def test_a_root_sent_again_by_the_gateway_keeps_its_first_block(anvil, installed):
    gateway = backend(anvil, installed)
    first = gateway.confirm(gateway.submit(root(1), 1))
    anvil.request("evm_mine")
    # the same root sent again through the backend: the chain's answer, nothing sent
    nonce_before = gateway.sender.nonce
    assert gateway.submit(root(1), 1) == first
    assert gateway.sender.nonce == nonce_before
    # sent again straight to the contract (a restart between send and receipt): no event, the first block stays
    tx_hash, _ = gateway.sender.send(installed[0], gateway.contract.encode_abi("anchor", [root(1), 1]), "again")
    again = Receipt(backend="evm", chain=first.chain, root=root(1), reference=tx_hash,
                    details={"contract": installed[0]})
    gateway.confirm(again)
    assert anvil.request("eth_getTransactionReceipt", [tx_hash])["logs"] == []
    assert gateway.confirm(again) == first and gateway.lookup(root(1)) == first


def test_a_front_runner_anchoring_the_root_first_neither_blocks_nor_spoils_the_gateway_s_anchor(
        anvil, installed, tmp_path, caplog):
    gateway = backend(anvil, installed)
    thief = EvmAnchor(anvil.url, installed[0], funded_key(anvil, tmp_path / "thief.key"))
    # the root copied from the mempool and anchored first, for another epoch, by another funded account
    theirs = thief.confirm(thief.submit(root(1), 99))
    assert theirs.details["gateway"] == thief.address
    with caplog.at_level(logging.WARNING, logger="govedge.anchor.evm"):
        pending = gateway.submit(root(1), 1)
    assert f"anchored by {thief.address} and not by this gateway's account {gateway.address}" in caplog.text
    assert "as well as by this gateway's account" not in caplog.text  # said once, when it is sent
    assert not pending.confirmed  # the gateway's own transaction was sent
    with caplog.at_level(logging.WARNING, logger="govedge.anchor.evm"):
        ours = gateway.confirm(pending)
    assert f"anchored by {thief.address} as well as by this gateway's account" in caplog.text
    assert ours.details["gateway"] == gateway.address and ours.details["epoch"] == 1 and ours.block > theirs.block
    # every account's record stands on its own
    auditor = EvmAnchor(anvil.url, installed[0])
    assert auditor.lookup(root(1), anchored_by=gateway.address) == ours
    assert auditor.lookup(root(1), anchored_by=thief.address) == theirs
    assert auditor.lookup(root(1)) == theirs  # no account named: the earliest, whoever sent it
    assert auditor.lookup(root(1), anchored_by="0x" + "11" * 20) is None
    assert gateway.anchored_by_others(root(1)) == [thief.address]
    # and the thief sending it again after the gateway changes nothing for the gateway
    assert thief.submit(root(1), 99) == theirs
    assert gateway.lookup(root(1)) == ours


def test_the_anchored_event_decoded_without_the_contract_object(anvil, installed):
    contract, _ = installed
    gateway = backend(anvil, installed)
    confirmed = gateway.confirm(gateway.submit(root(5), 2**64 - 1))

    topic0 = "0x" + keccak(b"Anchored(bytes32,uint64,address)").hex()
    logs = anvil.request("eth_getLogs", [{"address": contract, "fromBlock": "0x0", "toBlock": "latest"}])
    assert len(logs) == 1
    (entry,) = logs
    assert entry["topics"][0] == topic0 and len(entry["topics"]) == 4 and entry["data"] == "0x"
    topic = [bytes.fromhex(t[2:]) for t in entry["topics"]]
    assert eth_abi.decode(["bytes32"], topic[1])[0] == root(5)
    assert eth_abi.decode(["uint64"], topic[2])[0] == 2**64 - 1
    assert eth_abi.decode(["address"], topic[3])[0].lower() == gateway.address.lower()
    assert int(entry["blockNumber"], 16) == confirmed.block
    assert int(entry["logIndex"], 16) == confirmed.details["log_index"]
    assert entry["transactionHash"] == confirmed.reference

    sent = tx(anvil, confirmed.reference)
    assert sent["from"].lower() == gateway.address.lower() and sent["to"].lower() == contract.lower()
    assert sent["input"] == "0x" + (keccak(b"anchor(bytes32,uint64)")[:4]
                                    + eth_abi.encode(["bytes32", "uint64"], [root(5), 2**64 - 1])).hex()

    def anchored_at(r: bytes, account: str) -> int:
        call = "0x" + (keccak(b"anchoredAt(bytes32,address)")[:4] + eth_abi.encode(["bytes32", "address"],
                                                                                    [r, account])).hex()
        answer = anvil.request("eth_call", [{"to": contract, "data": call}, "latest"])
        return eth_abi.decode(["uint256"], bytes.fromhex(answer[2:]))[0]

    assert anchored_at(root(5), gateway.address) == confirmed.block and anchored_at(root(6), gateway.address) == 0
    assert anchored_at(root(5), "0x" + "11" * 20) == 0
    # what runs on the chain is the committed artifact
    artifact = json.loads(ARTIFACT_PATH.read_text())
    assert anvil.request("eth_getCode", [contract, "latest"]) == artifact["deployedBytecode"]


def test_the_committed_artifact_is_what_solc_js_compiles_now():
    fresh = subprocess.run(["node", str(CONTRACTS_DIR / "build.mjs"), "--stdout"], capture_output=True,
                           text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout == ARTIFACT_PATH.read_text(), (
        "anchor/contracts/Anchor.json differs from a fresh compile of Anchor.sol: "
        "run `npm run build` in anchor and commit Anchor.json")
    lock = json.loads((CONTRACTS_DIR.parent / "package-lock.json").read_text())
    assert json.loads(fresh.stdout)["compiler"]["version"].startswith(
        lock["packages"]["node_modules/solc"]["version"] + "+")


def test_the_same_flow_on_the_demos_in_process_chain(tmp_path):
    provider = EthereumTesterProvider()
    funded = provider.ethereum_tester.backend.account_keys
    operator, key = funded[0].to_bytes(), tmp_path / "gateway.key"
    key.write_text(funded[1].to_bytes().hex() + "\n")
    contract = deploy(provider, operator)

    gateway = EvmAnchor(provider, contract, key)
    chain_id = gateway.w3.eth.chain_id
    sent = [gateway.submit(root(n), n) for n in range(3)]
    confirmed = [gateway.confirm(r) for r in sent]
    assert [c.root for c in confirmed] == [root(n) for n in range(3)]
    assert confirmed[0].chain == f"eip155:{chain_id}" and confirmed[0].details["gateway"] == gateway.address
    assert gateway.lookup(root(2)) == confirmed[2]
    assert gateway.lookup(root(3)) is None

    restarted = EvmAnchor(provider, contract, key)
    assert restarted.w3.eth.get_transaction(restarted.confirm(restarted.submit(root(3), 3)).reference)["nonce"] == 3

    with pytest.raises(AnchorError) as refused:
        gateway.submit(bytes(32), 4)
    assert refused.value.code == "rejected" and "ZeroRoot" in refused.value.reason


def test_the_account_key_is_never_logged_nor_shown(anvil, installed, caplog):
    caplog.set_level(logging.DEBUG)
    key_hex = read_key_file(installed[1]).hex()
    gateway = backend(anvil, installed)
    gateway.confirm(gateway.submit(root(1), 1))
    with pytest.raises(AnchorError) as refused:
        gateway.submit(bytes(32), 2)
    for shown in (caplog.text, repr(gateway), str(refused.value)):
        assert key_hex not in shown.lower()


def test_key_files_name_what_is_wrong_without_showing_the_content(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "missing.key")
    secret = "ab" * 31
    (tmp_path / "short.key").write_text(secret)
    with pytest.raises(KeyFileError, match="64 hex digits") as short:
        read_key_file(tmp_path / "short.key")
    assert secret not in str(short.value)
    (tmp_path / "zero.key").write_text("0x" + "00" * 32)
    with pytest.raises(KeyFileError, match="valid secp256k1 key"):
        read_key_file(tmp_path / "zero.key")

    address = create_key_file(tmp_path / "new.key")
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600
    assert EvmAnchor("http://127.0.0.1:1", "0x" + "11" * 20, tmp_path / "new.key").address == address
    with pytest.raises(KeyFileError, match="never overwritten"):
        create_key_file(tmp_path / "new.key")
    assert os.path.exists(tmp_path / "new.key")


def test_gas_per_anchor_reports_the_gas_of_each_anchoring():
    figures = gas_per_anchor(count=3)
    assert json.loads(json.dumps(figures)) == figures
    assert figures["anchors"] == 3 and figures["node"].startswith("anvil/")
    assert 40_000 < figures["gas_per_anchor_min"] <= figures["gas_per_anchor_median"] \
        <= figures["gas_per_anchor_max"] < 60_000
    assert figures["deploy_gas"] > figures["gas_per_anchor_max"]
