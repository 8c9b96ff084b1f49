"""End to end on a real chain: a node (MicroPython firmware), the gateway anchoring its
epochs on anvil, the hub service storing batches and epoch records, a proof bundle
from each side, and `govedge verify` checking it on the chain; tampering with the
chain itself is found and named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.chain import anchored_block_slot, funded_key, start_anvil
from support.deploy import GATEWAY_ID, GatewayProcess
from govedge.anchor.evm import deploy
from govedge.tools.dev.broker import Mosquitto
from govedge.hub.store import HubStore
from support.hubkit import HubProcess, hub_beside
from support import wait_until
from support.nodes import VirtualNode

pytestmark = pytest.mark.e2e  # the product's processes, end to end


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", *args], capture_output=True, text=True, timeout=60)


def _account(key_file) -> str:
    from eth_account import Account

    from govedge.anchor.evm import read_key_file

    return Account.from_key(read_key_file(key_file)).address


def _deployment(tmp_path, build_dir, device: str, anchor: str):
    """Local and hub brokers (started), a node (not started), a gateway anchoring as ``anchor`` says
    (not started): small batches, so that epochs fill quickly."""
    local = Mosquitto(tmp_path / "local", persistence=True).start()
    hub_broker = Mosquitto(tmp_path / "hub", persistence=True).start()
    registry = tmp_path / "registry.json"
    node = VirtualNode(tmp_path / device, build_dir, registry, device, local.port, interval_s=0.1)
    gw = GatewayProcess(tmp_path / "gateway", registry, local.port, hub_broker.port, batch_interval_s=0.3,
                        batch_max_readings=5, extra=anchor)
    return local, hub_broker, registry, node, gw


@pytest.fixture
def anchored(tmp_path, build_dir):
    """A running deployment whose gateway has anchored at least one epoch the hub has."""
    anvil = start_anvil(tmp_path / "anvil")
    key = funded_key(anvil, tmp_path / "anchor.key")
    contract = deploy(anvil.url, key)
    local, hub_broker, registry, node, gw = _deployment(
        tmp_path, build_dir, "esp32-0901", f'[anchor]\nbackend = "evm"\nepoch_s = 1.5\n[anchor.evm]\n'
                                           f'rpc_url = "{anvil.url}"\ncontract = "{contract}"\nkey_file = "{key}"\n')
    gw.start()
    hub_folder = tmp_path / "hubside"
    hub = hub_beside(hub_folder, registry, GATEWAY_ID, gw.public_key, hub_broker.port).start()
    toml = hub.config
    try:
        gw.wait_for_log("ingest: subscribed")
        hub.wait_subscribed()
        node.start()

        def epochs_at_hub() -> int:
            s = HubStore("sqlite://" + str(hub_folder / "hub.db"))
            try:
                return s.count("epochs")
            finally:
                s.close()

        wait_until(lambda: epochs_at_hub() >= 2, timeout=60, what="two anchored epochs at the hub")
        node.kill()
        yield {"anvil": anvil, "contract": contract, "gateway": gw, "hub_toml": toml, "registry": registry,
               "tmp": tmp_path}
    finally:
        node.kill()
        hub.stop()
        gw.stop()
        local.stop()
        hub_broker.stop()
        anvil.stop()


def test_a_reading_is_proven_from_its_node_to_the_chain(anchored):
    a = anchored
    bundle_hub = a["tmp"] / "bundle-hub.json"
    out = _cli("hub", "proof", "--config", str(a["hub_toml"]), "esp32-0901", "1", "--output", str(bundle_hub))
    assert out.returncode == 0, out.stderr
    out = _cli("gateway", "proof", "--config", str(a["gateway"].folder / "gateway.toml"), "esp32-0901", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(bundle_hub.read_text())  # both sides prove the same thing
    bundle = json.loads(bundle_hub.read_text())
    assert bundle["anchor"]["backend"] == "evm" and bundle["anchor"]["block"] >= 1
    out = _cli("verify", str(bundle_hub), "--registry", str(a["registry"]), "--rpc", a["anvil"].url,
               "--contract", a["contract"])
    assert out.returncode == 0, out.stdout + out.stderr
    account = _account(a["tmp"] / "anchor.key")
    # without --account the chain line names the sender but does not say ok: nothing checked who it is
    assert [line.split()[:2] for line in out.stdout.splitlines() if line.startswith("  ")][:6] == [
        ["ok", "reading"], ["ok", "device_signature"], ["ok", "batch_path"], ["ok", "epoch_path"],
        ["ok", "anchor_receipt"], ["--", "chain"]]
    assert f"anchored by {account}: gateway identity not checked" in out.stdout, out.stdout
    out = _cli("verify", str(bundle_hub), "--registry", str(a["registry"]), "--rpc", a["anvil"].url,
               "--contract", a["contract"], "--account", account)
    assert out.returncode == 0 and f"  ok  chain" in out.stdout and f"anchored by {account}: valid" in out.stdout, \
        out.stdout + out.stderr
    out = _cli("verify", str(bundle_hub), "--registry", str(a["registry"]), "--rpc", a["anvil"].url,
               "--contract", a["contract"], "--account", "0x" + "11" * 20)
    assert out.returncode == 1 and "FAILED  chain: the chain does not hold root" in out.stdout, out.stdout
    assert "anchored by 0x" + "11" * 20 in out.stdout
    # a receipt that names another block than the chain's is found out on the chain
    bundle["anchor"]["block"] += 1
    forged = a["tmp"] / "forged.json"
    forged.write_text(json.dumps(bundle))
    out = _cli("verify", str(forged), "--registry", str(a["registry"]), "--rpc", a["anvil"].url,
               "--contract", a["contract"])
    assert out.returncode == 1 and "FAILED  chain:" in out.stdout, out.stdout


def test_a_root_taken_off_the_chain_is_named(anchored):
    a = anchored
    bundle = a["tmp"] / "bundle.json"
    assert _cli("hub", "proof", "--config", str(a["hub_toml"]), "esp32-0901", "1", "--output",
                str(bundle)).returncode == 0
    root = bytes.fromhex(json.loads(bundle.read_text())["epoch"]["root"])
    # the chain's state rewritten under the contract: the root's first block is gone
    a["anvil"].request("anvil_setStorageAt", [a["contract"], anchored_block_slot(root, _account(a["tmp"] / "anchor.key")),
                                              "0x" + "00" * 32])
    out = _cli("verify", str(bundle), "--registry", str(a["registry"]), "--rpc", a["anvil"].url,
               "--contract", a["contract"])
    assert out.returncode == 1 and "FAILED  chain:" in out.stdout, out.stdout
    out = _cli("verify", str(bundle), "--registry", str(a["registry"]))  # offline, the rest still holds
    assert out.returncode == 0 and "the chain was not asked" in out.stdout


def test_rest_anchoring_survives_an_observer_outage_and_proves_a_reading(tmp_path, build_dir):
    import sqlite3
    import time

    from cryptography.hazmat.primitives import serialization

    from support.rest_observer import Observer

    observer = Observer(block_interval=0.3).start()
    local, hub_broker, registry, node, gw = _deployment(
        tmp_path, build_dir, "esp32-0902",
        f'[anchor]\nbackend = "rest"\nepoch_s = 1\n[anchor.rest]\nurl = "{observer.url}"\ntimeout_s = 2\n')
    observer.register(GATEWAY_ID, gw.public_key)
    pem = tmp_path / "gateway.pub.pem"
    pem.write_bytes(gw.public_key.public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    observer.stop()  # the chain is away when the gateway starts
    gw.start()
    try:
        gw.wait_for_log("ingest: subscribed")
        node.start()
        gw.wait_for_log("anchor: epoch 0: chain unreachable", timeout=30)
        status = _cli("gateway", "status", "--config", str(gw.folder / "gateway.toml")).stdout
        assert "anchor      PROBLEM: chain unreachable" in status, status
        assert "not yet on the chain" in status and "(last error: unreachable:" in status, status
        time.sleep(1.5)  # it tries again, with growing pauses
        observer.start()
        gw.wait_for_log("anchor: epoch 0 in block", timeout=30)
        gw.wait_for_log("anchor: epoch 2 in block", timeout=30)
        node.kill()
        out = _cli("gateway", "proof", "--config", str(gw.folder / "gateway.toml"), "esp32-0902", "2",
                   "--output", str(tmp_path / "bundle.json"))
        assert out.returncode == 0, out.stderr
        out = _cli("verify", str(tmp_path / "bundle.json"), "--registry", str(registry), "--observer", observer.url,
                   "--gateway-key", str(pem))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ok  chain            govchain-nrw-conformance holds the root" in out.stdout
    finally:
        node.kill()
        gw.stop()
        observer.stop()
        local.stop()
        hub_broker.stop()
    assert "every one anchored on the chain" in _cli("gateway", "status", "--config",
                                                     str(gw.folder / "gateway.toml")).stdout
    db = sqlite3.connect(tmp_path / "gateway" / "data" / "gateway.db")
    epochs, confirmed, attempts = db.execute("SELECT count(*), sum(confirmed), max(attempts) FROM epochs").fetchone()
    assert epochs >= 3 and confirmed == epochs and attempts >= 1  # every one anchored in the end, receipts kept


# -- secrets in endpoints: none of them reaches a log line, live.json, the epochs table or an error

RPC_SECRETS = ("Userinfo-Secret1", "PathToken-Secret2deadbeef", "Query-Secret3")
DSN_SECRETS = ("p@ss-Secret4", "p%40ss-Secret4", "ss-Secret4", "Query-Secret5")


class _TokenProxy:
    """A provider-style RPC front for anvil: it answers only at /v3/<token>, and 503 to the first requests
    (so that the gateway's errors, which quote the node, are logged and stored too)."""

    def __init__(self, upstream: str, path: str, outage_requests: int = 4):
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.outage_left = outage_requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.split("?")[0] != path or proxy.outage_left > 0:
                    proxy.outage_left -= 1
                    self.send_response(503 if self.path.split("?")[0] == path else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    data = answer.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _assert_no_secret(where: str, text: str, secrets) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"{where} shows {leaked}:\n{text[-3000:]}"


def test_secrets_in_the_rpc_url_reach_no_log_status_or_table(tmp_path, build_dir):
    import sqlite3

    from govedge.anchor import AnchorError
    from govedge.anchor.evm import EvmAnchor

    anvil = start_anvil(tmp_path / "anvil")
    key = funded_key(anvil, tmp_path / "anchor.key")
    contract = deploy(anvil.url, key)
    proxy = _TokenProxy(anvil.url, "/v3/PathToken-Secret2deadbeef")
    rpc = f"http://rpc-user:Userinfo-Secret1@127.0.0.1:{proxy.port}/v3/PathToken-Secret2deadbeef?apikey=Query-Secret3"
    local, hub_broker, registry, node, gw = _deployment(
        tmp_path, build_dir, "esp32-0903", f'[anchor]\nbackend = "evm"\nepoch_s = 1\n[anchor.evm]\n'
                                           f'rpc_url = "{rpc}"\ncontract = "{contract}"\nkey_file = "{key}"\n')
    live_seen = []
    gw.start()
    try:
        gw.wait_for_log("ingest: subscribed")
        node.start()
        gw.wait_for_log("anchor: epoch 0: chain unreachable", timeout=30)
        live_seen.append((gw.folder / "data" / "live.json").read_text())
        status = _cli("gateway", "status", "--config", str(gw.folder / "gateway.toml"))
        gw.wait_for_log("anchor: epoch 1 in block", timeout=60)
        live_seen.append((gw.folder / "data" / "live.json").read_text())
    finally:
        node.kill()
        gw.stop()
        local.stop()
        hub_broker.stop()
    # an auditor's backend and its errors: a node away, and a node that answers 404
    errors = []
    for url in (rpc.replace(f":{proxy.port}/", ":1/"), rpc.replace("/v3/", "/v4/")):
        try:
            EvmAnchor(url, contract).lookup(bytes(range(32)))
        except AnchorError as exc:
            errors.append(f"{exc.code}: {exc} {exc!r}")
    proxy.stop()
    anvil.stop()
    assert len(errors) == 2
    db = sqlite3.connect(tmp_path / "gateway" / "data" / "gateway.db")
    table = repr(db.execute("SELECT * FROM epochs").fetchall())
    assert "unreachable" in gw.log and "127.0.0.1" in gw.log  # the errors were there, with their endpoint
    for where, text in (("gateway log", gw.log), ("live.json", "\n".join(live_seen)), ("epochs table", table),
                        ("gateway status", status.stdout + status.stderr), ("an auditor's errors", "\n".join(errors))):
        _assert_no_secret(where, text, RPC_SECRETS)


def test_secrets_in_the_hub_dsn_reach_no_log_or_error(tmp_path):
    from support.hubkit import World, publish_batches
    from support.postgres import PostgresServer
    from govedge.hub.store import StoreError
    from govedge.tools.dev.broker import free_port

    server = PostgresServer().start()  # trust authentication: any password is taken
    try:
        database = server.new_database().rsplit("/", 1)[1]
        dsn = (f"postgresql://govedge:p%40ss-Secret4@127.0.0.1:{server.port}/{database}"
               f"?password=Query-Secret5&application_name=hub")
        world = World(tmp_path / "world", store_url=dsn)
        with Mosquitto(tmp_path / "hub-broker", persistence=True) as broker:
            hub = HubProcess(world.hub_toml(broker.port)).start()
            try:
                hub.wait_subscribed()
                publish_batches(broker.port, world.batches(2))
                wait_until(lambda: "stored" in hub.log or HubStore(dsn).count("batches") >= 2, timeout=30,
                           what="the hub storing two batches")
            finally:
                hub.stop()
        # the same DSN with its password written raw ('@' in it), to a server that is not there
        raw = f"postgresql://govedge:p@ss-Secret4@127.0.0.1:{free_port()}/{database}?password=Query-Secret5"
        with pytest.raises(StoreError) as refused:
            HubStore(raw)
        world_dead = World(tmp_path / "dead", store_url=raw)
        dead = HubProcess(world_dead.hub_toml(free_port(), client_id="hub-dead"))
        dead.start().proc.wait(30)
    finally:
        server.stop()
    assert "cannot connect to PostgreSQL at postgresql://govedge:***@127.0.0.1" in str(refused.value)
    for where, text in (("hub log", hub.log), ("store error", f"{refused.value} {refused.value!r}"),
                        ("failed hub's log", dead.log)):
        _assert_no_secret(where, text, DSN_SECRETS)


def test_a_front_runner_copying_roots_from_the_mempool_does_not_stop_the_gateway_s_anchors(tmp_path, build_dir):
    """Blocks mined by hand: every anchoring transaction of the gateway waiting in the mempool is copied by
    another funded account with a higher tip, so the copy lands first, in the same block."""
    import time

    from govedge.anchor.evm import EvmAnchor

    anvil = start_anvil(tmp_path / "anvil")
    key = funded_key(anvil, tmp_path / "anchor.key")
    contract = deploy(anvil.url, key)
    account = _account(key)
    thief = EvmAnchor(anvil.url, contract, funded_key(anvil, tmp_path / "thief.key"), gas_price=10**11)
    anvil.request("evm_setAutomine", [False])
    local, hub_broker, registry, node, gw = _deployment(
        tmp_path, build_dir, "esp32-0904", f'[anchor]\nbackend = "evm"\nepoch_s = 1\n[anchor.evm]\n'
                                           f'rpc_url = "{anvil.url}"\ncontract = "{contract}"\nkey_file = "{key}"\n')
    copied = set()
    gw.start()
    try:
        gw.wait_for_log("ingest: subscribed")
        node.start()
        deadline = time.monotonic() + 90
        while "anchor: epoch 1 in block" not in gw.log:
            assert time.monotonic() < deadline, gw.log[-3000:]
            pending = anvil.request("txpool_content", [])["pending"]
            for sender, txs in pending.items():
                for sent in txs.values():
                    if sender.lower() == account.lower() and sent["hash"] not in copied:
                        copied.add(sent["hash"])
                        thief.sender.send(contract, sent["input"], "copying the gateway's root")
            anvil.request("evm_mine")
            time.sleep(0.3)
        out = _cli("gateway", "proof", "--config", str(gw.folder / "gateway.toml"), "esp32-0904", "1",
                   "--output", str(tmp_path / "bundle.json"))
        assert out.returncode == 0, out.stderr
    finally:
        node.kill()
        gw.stop()
        local.stop()
        hub_broker.stop()
    try:
        assert copied and "as well as by this gateway's account" in gw.log  # the gateway noticed
        bundle = json.loads((tmp_path / "bundle.json").read_text())
        root = bytes.fromhex(bundle["epoch"]["root"])
        assert thief.address in EvmAnchor(anvil.url, contract).anchored_by_others(root) or \
            thief.lookup(root) is not None, "the copy was not anchored first"
        verify = ("verify", str(tmp_path / "bundle.json"), "--registry", str(registry), "--rpc", anvil.url,
                  "--contract", contract)
        out = _cli(*verify, "--account", account)
        assert out.returncode == 0 and f"  ok  chain" in out.stdout and f"anchored by {account}: valid" in out.stdout, \
            out.stdout + out.stderr
        out = _cli(*verify, "--account", thief.address)  # the copy is the thief's, not the gateway's
        assert out.returncode == 1 and "FAILED  chain: the chain holds the root in block" in out.stdout, out.stdout
        # a receipt of another chain is refused, naming both
        bundle["anchor"]["chain"] = "eip155:1"
        (tmp_path / "other-chain.json").write_text(json.dumps(bundle))
        out = _cli("verify", str(tmp_path / "other-chain.json"), *verify[2:], "--account", account)
        assert out.returncode == 1 and ("FAILED  chain: the receipt is of chain eip155:1, the node asked serves "
                                        "eip155:31337") in out.stdout, out.stdout
    finally:
        anvil.stop()


def test_a_replaced_gateway_store_numbers_from_0_again_and_readings_of_both_stores_prove(tmp_path, build_dir):
    """A new SD card: the gateway's store deleted between two runs. The fresh store's batch 0 and epoch 0 are
    stored beside the lost store's, and a reading through each store is proven on the chain."""
    import shutil

    anvil = start_anvil(tmp_path / "anvil")
    key = funded_key(anvil, tmp_path / "anchor.key")
    contract = deploy(anvil.url, key)
    device = "esp32-0941"
    local, hub_broker, registry, node, gw = _deployment(
        tmp_path, build_dir, device, f'[anchor]\nbackend = "evm"\nepoch_s = 1.5\n[anchor.evm]\n'
                                     f'rpc_url = "{anvil.url}"\ncontract = "{contract}"\nkey_file = "{key}"\n')
    hub_folder = tmp_path / "hubside"
    hub_folder.mkdir()
    hub = None
    url = "sqlite://" + str(hub_folder / "hub.db")

    def at_hub(sql: str) -> list:
        s = HubStore(url)
        try:
            return s._exec(sql).fetchall()
        finally:
            s.close()

    def store_of_gateway() -> str:
        import sqlite3

        db = sqlite3.connect(gw.folder / "data" / "gateway.db")
        try:
            (n,) = db.execute("SELECT next FROM sequences WHERE name = 'store'").fetchone()
        finally:
            db.close()
        return n.to_bytes(8, "big", signed=True).hex()

    try:
        gw.start()
        hub = hub_beside(hub_folder, registry, GATEWAY_ID, gw.public_key, hub_broker.port).start()
        toml = hub.config
        gw.wait_for_log("ingest: subscribed")
        hub.wait_subscribed()
        node.start()
        wait_until(lambda: at_hub("SELECT count(*) FROM epochs")[0][0] >= 1, timeout=60, what="store A's epoch")
        node.kill()
        store_a = store_of_gateway()
        gw.stop()
        shutil.rmtree(gw.folder / "data")  # the SD card replaced: a fresh store, numbering from 0 again
        gw.start()
        wait_until(lambda: gw.log.count("ingest: subscribed") >= 2, what="the gateway on its fresh store")
        store_b = store_of_gateway()
        assert store_b != store_a
        node.start()
        wait_until(lambda: at_hub(f"SELECT count(*) FROM epochs WHERE store_id = '{store_b}'")[0][0] >= 1,
                   timeout=60, what="store B's epoch at the hub", detail=lambda: hub.log[-2000:])
        node.kill()
    finally:
        node.kill()
        if hub is not None:
            hub.stop()
        gw.stop()
        local.stop()
        hub_broker.stop()
    try:
        assert at_hub("SELECT code, reason FROM rejected") == []
        assert at_hub(f"SELECT count(*) FROM batches WHERE seq = 0 AND store_id IN ('{store_a}', '{store_b}')") \
            == [(2,)]
        for store_id in (store_a, store_b):
            # the first reading stored through this store (store B's first batches may repeat readings the
            # hub has from store A: a node sends again what it was not told is committed, and the hub keeps
            # a reading once)
            seq, batch_seq = at_hub(f"SELECT seq, batch_seq FROM readings WHERE store_id = '{store_id}' "
                                    "ORDER BY batch_seq, seq LIMIT 1")[0]
            bundle = tmp_path / f"bundle-{store_id}.json"
            out = _cli("hub", "proof", "--config", str(toml), device, str(seq), "--output", str(bundle))
            assert out.returncode == 0, out.stderr
            assert json.loads(bundle.read_text())["batch"]["id"] == f"{GATEWAY_ID}/{store_id}/{batch_seq}"
            out = _cli("verify", str(bundle), "--registry", str(registry), "--rpc", anvil.url, "--contract", contract,
                       "--account", _account(tmp_path / "anchor.key"))
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"in batch {GATEWAY_ID}/{store_id}/{batch_seq}: valid" in out.stdout, out.stdout
    finally:
        anvil.stop()
