"""Proof bundles: every link checked, every tampered link named."""

from __future__ import annotations

import copy
import json

import pytest

from govedge.core import merkle, proof
from govedge.core.epoch import Epoch, batch_head, head_of
from govedge.anchor import Receipt
from govedge.core.batch import verify as verify_batch
from govedge.core.registry import Registry
from support.hubkit import GATEWAY, World


@pytest.fixture
def epoch_world(tmp_path):
    """Five batches of a gateway in one epoch, and a bundle for a reading in the fourth."""
    world = World(tmp_path / "w", devices=3)
    cose = world.batches(5, per_batch=7)
    batches = [verify_batch(c, lambda g: [world.gateway_key.public_key()]) for c in cose]
    heads = tuple(head_of(b) for b in batches)
    epoch = Epoch(GATEWAY, 12, heads)
    receipt = Receipt("rest", "govchain-test", epoch.root, "tx-0001", block=812, block_time=1_764_400_900)
    target = batches[3]
    bundle = proof.build(target.messages[5], target.leaves, heads[3], epoch, receipt)
    return world, Registry.load(world.folder / "registry.json"), bundle, epoch


def test_a_sound_bundle_passes_every_link(epoch_world):
    _, registry, bundle, epoch = epoch_world
    lines = proof.verify(json.loads(proof.dumps(bundle)), registry)
    assert [line.split()[0] for line in lines] == ["reading", "device_signature", "batch_path", "epoch_path",
                                                   "anchor_receipt"]
    assert "leaf 5 of 7 in batch gw-hub-test/3" in lines[2]
    assert "batch 3 of 5 in epoch 12" in lines[3]
    # the paths are RFC 9162 paths: they check with the module's verifier as they are
    leaf = merkle.leaf_hash(bytes.fromhex(bundle["reading"]["message"]))
    assert len(bundle["batch"]["path"]) == 3 and len(bundle["epoch"]["path"]) == 3
    assert merkle.verify_inclusion(merkle.leaf_hash(bytes.fromhex(bundle["batch"]["head"])), 3, 5,
                                   [bytes.fromhex(p) for p in bundle["epoch"]["path"]], epoch.root)
    assert leaf


def _flip(hex_text: str, at: int) -> str:
    data = bytearray(bytes.fromhex(hex_text))
    data[at % len(data)] ^= 0x01
    return data.hex()


TAMPERING = {
    "device payload": (lambda b: b["reading"].update(message=_flip(b["reading"]["message"], -67)), "device_signature"),
    "device message cut": (lambda b: b["reading"].update(message=b["reading"]["message"][:-2]), "reading"),
    "batch path": (lambda b: b["batch"]["path"].__setitem__(1, _flip(b["batch"]["path"][1], 5)), "batch_path"),
    "batch leaf index": (lambda b: b["batch"].update(leaf_index=4), "batch_path"),
    "batch head root": (lambda b: b["batch"].update(head=b["batch"]["head"].replace(
        b["batch"]["head"][-64:], _flip(b["batch"]["head"][-64:], 0))), "batch_path"),
    "epoch path": (lambda b: b["epoch"]["path"].__setitem__(0, _flip(b["epoch"]["path"][0], 31)), "epoch_path"),
    "epoch root": (lambda b: b["epoch"].update(root=_flip(b["epoch"]["root"], 3)), "epoch_path"),
    "epoch of another gateway": (lambda b: b["epoch"].update(gateway="gw-other"), "epoch_path"),
    "receipt root": (lambda b: b["anchor"].update(root=_flip(b["anchor"]["root"], 0)), "anchor_receipt"),
    "receipt unconfirmed": (lambda b: b["anchor"].update(block=None), "anchor_receipt"),
    "receipt missing": (lambda b: b.update(anchor=None), "anchor_receipt"),
}


@pytest.mark.parametrize("what", list(TAMPERING))
def test_tampering_with_a_link_is_detected_and_the_link_named(epoch_world, what):
    _, registry, bundle, _ = epoch_world
    change, link = TAMPERING[what]
    bad = copy.deepcopy(bundle)
    change(bad)
    with pytest.raises(proof.ProofError) as err:
        proof.verify(bad, registry)
    assert err.value.link == link, str(err.value)


def test_a_reading_signed_by_a_device_the_registry_does_not_know_fails_at_its_signature(epoch_world):
    _, _, bundle, _ = epoch_world
    with pytest.raises(proof.ProofError) as err:
        proof.verify(bundle, Registry())
    assert err.value.link == "device_signature" and "unknown" in err.value.reason


def test_the_bundle_grows_with_the_logarithm_of_the_readings():
    # an epoch of 1,000,000 readings: 2,000 batches of 500; the bundle holds two paths of
    # ceil(log2(500)) + ceil(log2(2000)) = 9 + 11 hashes, not the batches
    sizes = {}
    for batches, per_batch in ((2, 500), (2000, 500)):
        heads = tuple(batch_head(GATEWAY, i, 1_764_400_000, "raw", per_batch, bytes(32)) for i in range(batches))
        message = bytes(160)
        leaves = [merkle.leaf_hash(message)] + [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(per_batch - 1)]
        epoch = Epoch(GATEWAY, 0, heads)
        head = batch_head(GATEWAY, 1, 1_764_400_000, "raw", per_batch, merkle.root(leaves))
        epoch = Epoch(GATEWAY, 0, (heads[0], head) + heads[2:])
        receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "ab" * 32, block=1, block_time=1)
        bundle = proof.build(message, leaves, head, epoch, receipt)
        sizes[batches * per_batch] = len(proof.dumps(bundle).encode())
        assert len(bundle["batch"]["path"]) == 9
        assert len(bundle["epoch"]["path"]) == (1 if batches == 2 else 11)
    assert sizes[1_000_000] - sizes[1_000] < 10 * 75  # ten more hashes (64 hex digits, quotes, comma, indent)
    assert sizes[1_000_000] < 3000


# -- govedge verify: exit status 0 proven, 1 does not hold, 2 usage or input error, 3 could not check --------


def _verify_cli(bundle: dict, registry_path, tmp_path, *flags):
    import subprocess
    import sys

    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "verify", str(path), "--registry",
                           str(registry_path), *flags], capture_output=True, text=True, timeout=120)


def test_offline_the_receipt_is_shown_as_not_checked_even_with_a_changed_block(epoch_world, tmp_path):
    world, _, bundle, _ = epoch_world
    for block in (812, 813):  # the block the chain gave, and one changed in the bundle: offline neither is known
        bundle["anchor"]["block"] = block
        out = _verify_cli(bundle, world.folder / "registry.json", tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ok  anchor_receipt" not in out.stdout
        assert (f"  --  anchor_receipt   rest govchain-test, block {block}, tx-0001: not checked on the chain"
                in out.stdout.splitlines()), out.stdout
        assert "  ok  epoch_path" in out.stdout and "the chain was not asked" in out.stdout


def test_verify_json_gives_every_link_with_its_status(epoch_world, tmp_path):
    world, _, bundle, _ = epoch_world
    out = _verify_cli(bundle, world.folder / "registry.json", tmp_path, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["exit_code"], doc["result"]) == (0, "proven")
    assert [(e["link"], e["status"]) for e in doc["links"]] == [
        ("reading", "ok"), ("device_signature", "ok"), ("batch_path", "ok"), ("epoch_path", "ok"),
        ("anchor_receipt", "not checked"), ("chain", "not checked")]
    assert doc["links"][2]["text"] == "leaf 5 of 7 in batch gw-hub-test/3: valid"


def test_a_forged_reading_exits_1_naming_the_link_and_what_was_not_reached(epoch_world, tmp_path):
    world, _, bundle, _ = epoch_world
    TAMPERING["device payload"][0](bundle)
    out = _verify_cli(bundle, world.folder / "registry.json", tmp_path)
    assert out.returncode == 1 and "  ok  reading" in out.stdout and "FAILED  device_signature:" in out.stdout
    doc = json.loads(_verify_cli(bundle, world.folder / "registry.json", tmp_path, "--json").stdout)
    assert (doc["exit_code"], doc["result"]) == (1, "does not hold")
    assert [e["status"] for e in doc["links"]] == ["ok", "failed"] + ["not reached"] * 4


def test_a_chain_that_cannot_be_reached_exits_3_not_as_a_forgery(epoch_world, tmp_path):
    import socket

    world, _, bundle, _ = epoch_world
    with socket.socket() as closed:  # bound, never listening: every connection to it is refused
        closed.bind(("127.0.0.1", 0))
        observer = f"http://127.0.0.1:{closed.getsockname()[1]}"
        out = _verify_cli(bundle, world.folder / "registry.json", tmp_path, "--observer", observer)
        assert out.returncode == 3, out.stdout + out.stderr
        assert "  ok  epoch_path" in out.stdout and "UNCHECKED  chain: unreachable:" in out.stdout, out.stdout
        assert "FAILED" not in out.stdout and "Traceback" not in out.stderr
        doc = json.loads(_verify_cli(bundle, world.folder / "registry.json", tmp_path, "--observer", observer,
                                     "--json").stdout)
    assert (doc["exit_code"], doc["result"]) == (3, "could not check")
    assert doc["links"][-1]["link"] == "chain" and doc["links"][-1]["status"] == "could not check"
    # the chain did not say which block holds the root: the receipt's block is its own word
    assert doc["links"][4] == {"link": "anchor_receipt", "status": "not checked",
                               "text": "rest govchain-test, block 812, tx-0001: not checked on the chain"}
