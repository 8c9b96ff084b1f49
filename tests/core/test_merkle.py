"""RFC 9162 Merkle trees: the inclusion paths and consistency proofs an auditor checks.

Roots and proofs are held against pymerkle (an implementation nobody here wrote),
the certificate-transparency reference vectors and RFC 9162's own worked
example; the verifiers refuse every corrupted proof, root, leaf, index and size,
and answer False, never an exception, to malformed input.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import random
import sys

import pymerkle
import pytest
from hypothesis import given
from hypothesis import strategies as st

from govedge.core import merkle
from govedge.core.merkle import (
    MerkleError,
    MerkleTree,
    consistency_proof,
    empty_root,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def flipped(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# Random device messages and their leaf hashes, the same on every run.
_rng = random.Random(9162)
MESSAGES = [_rng.randbytes(_rng.randrange(0, 160)) for _ in range(4096)]
LEAVES = [leaf_hash(m) for m in MESSAGES]
TREE = MerkleTree(LEAVES)  # its roots and proofs at every size up to 4096 are the subject here


# --- pymerkle, configured as RFC 9162: SHA-256, 0x00 leaf and 0x01 node prefixes ---------


class PymerkleOverLeafHashes(pymerkle.BaseMerkleTree):
    """pymerkle's storage interface over leaf hashes we already have, as the gateway keeps them."""

    def __init__(self, leaf_hashes):
        self.hashes = list(leaf_hashes)
        super().__init__("sha256")  # security (0x00/0x01 prefixes) is on unless disabled

    def _encode_entry(self, data):
        return data

    def _store_leaf(self, data, digest):
        self.hashes.append(digest)
        return len(self.hashes)

    def _get_leaf(self, index):  # pymerkle counts leaves from one
        return self.hashes[index - 1]

    def _get_leaves(self, offset, width):
        return self.hashes[offset : offset + width]

    def _get_size(self):
        return len(self.hashes)


def pymerkle_inclusion(tree, index: int, size: int) -> list[bytes]:
    """pymerkle's path is [leaf hash, siblings nearest first]; RFC 9162's PATH is the siblings."""
    proof = tree.prove_inclusion(index + 1, size)
    leaf, top = tree.get_leaf(index + 1), tree.get_root(size)
    pymerkle.verify_inclusion(leaf, top, proof, index=index + 1, size=size)  # raises if not
    assert proof.path[0] == leaf
    return proof.path[1:]


def pymerkle_consistency(tree, m: int, n: int) -> list[bytes]:
    """RFC 9162's PROOF(m, D[n]) rebuilt from pymerkle's consistency proof.

    pymerkle lays the proof out its own way: where the old tree ends exactly at a
    split point k it goes on into D[k:n] down to its first leaf, where the RFC
    records MTH(D[k:n]) whole. Its path is a base, then siblings nearest first,
    with a mask saying which belong to the old tree. The leading entries outside
    the old tree fold (by pymerkle's own left/right rule) into that MTH(D[k:n]).
    The first entry that belongs to the old tree is the subtree where the RFC's
    recursion stops; the RFC records it only if it is not the old root itself,
    i.e. if another old-tree entry lies above it.
    """
    proof = tree.prove_consistency(m, n)
    first, second = tree.get_root(m), tree.get_root(n)
    pymerkle.verify_consistency(first, second, proof, prior_size=m, later_size=n)  # raises if not
    path, rule, subset = proof.path, proof.rule, proof.subset
    t = subset.index(1)
    folded = []
    if t > 0:
        r = path[0]
        for bit, digest in zip(rule[: t - 1], path[1:t]):
            r = tree.hash_pair(r, digest) if bit == 0 else tree.hash_pair(digest, r)
        folded = [r]
    stop = [path[t]] if any(subset[t + 1 :]) else []
    return stop + folded + path[t + 1 :]


def test_pymerkle_is_configured_for_rfc9162_sha256():
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    assert tree.security and tree.algorithm == "sha256"
    a, b = sha256(b"a"), sha256(b"b")
    assert tree.hash_buff(b"reading") == sha256(b"\x00reading") == leaf_hash(b"reading")
    assert tree.hash_pair(a, b) == sha256(b"\x01" + a + b) == node_hash(a, b)
    assert tree.get_root(0) == sha256(b"") == empty_root()


def test_roots_and_proofs_match_pymerkle_for_every_size_up_to_300():
    reference = pymerkle.InmemoryTree.init_from_entries(MESSAGES[:300], algorithm="sha256")
    rng = random.Random(300)
    for n in range(1, 301):
        leaves = LEAVES[:n]
        # pymerkle hashed the raw messages itself: its leaves are our leaf hashes
        assert reference.get_leaf(n) == leaf_hash(MESSAGES[n - 1])
        assert root(leaves) == reference.get_root(n), n
        indices = range(n) if n <= 48 else {0, n // 2, n - 1, *rng.sample(range(n), 6)}
        for i in indices:
            assert inclusion_proof(i, leaves) == pymerkle_inclusion(reference, i, n), (i, n)
        sizes = range(1, n + 1) if n <= 48 else {1, n // 2, n - 1, n, *rng.sample(range(1, n), 6)}
        for m in sizes:
            assert consistency_proof(m, leaves) == pymerkle_consistency(reference, m, n), (m, n)


def test_the_root_of_a_stream_matches_pymerkle_for_every_size_up_to_300_and_beyond():
    reference = pymerkle.InmemoryTree.init_from_entries(MESSAGES[:300], algorithm="sha256")
    stream = merkle.RootOfStream()
    assert stream.root() == empty_root()
    for n in range(1, 301):
        stream.append(LEAVES[n - 1])
        assert stream.size == n and stream.root() == reference.get_root(n), n
    rng = random.Random(4097)
    leaves = [sha256(b"\x00" + rng.randbytes(24)) for _ in range(4097)]
    stream = merkle.RootOfStream()
    for h in leaves:
        stream.append(h)
    big = pymerkle.InmemoryTree(algorithm="sha256")
    for h in leaves:
        big.append_entry(h)  # hashed again by pymerkle: compare with our root of those leaves' leaf hashes
    assert merkle.root([leaf_hash(h) for h in leaves]) == big.get_root(4097)
    assert stream.root() == merkle.root(leaves)


@pytest.mark.parametrize("n", [511, 512, 513, 1000, 4097, 65535, 65537, 100_003])
def test_large_trees_match_pymerkle(n):
    rng = random.Random(n)
    leaves = [sha256(b"\x00" + rng.randbytes(24)) for _ in range(n)]
    ours, reference = MerkleTree(leaves), PymerkleOverLeafHashes(leaves)
    assert ours.root() == reference.get_root()
    for i in {0, 1, n // 2, n - 2, n - 1, *rng.sample(range(n), 6)}:
        assert ours.inclusion_proof(i) == pymerkle_inclusion(reference, i, n), i
    for m in {1, 2, n // 2, n - 1, n, *rng.sample(range(1, n), 6)}:
        assert ours.consistency_proof(m) == pymerkle_consistency(reference, m, n), m


# --- published vectors --------------------------------------------------------------------
# google/certificate-transparency, cpp/merkletree/merkle_tree_test.cc (kInputs, kSHA256Roots,
# kSHA256Paths, kSHA256Proofs; leaves counted from one there, from zero here), the same data
# as transparency-dev/merkle testonly/constants.go and proof/verify_test.go, which adds the
# (6, 7) consistency proof and the leaf hashes of the eight inputs.

CT_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CT_LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
CT_ROOTS = {  # tree size -> root
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
CT_INCLUSION = {  # (leaf index, tree size) -> PATH
    (0, 1): [],
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
CT_CONSISTENCY = {  # (first size, second size) -> PROOF
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (6, 7): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_LEAVES = [leaf_hash(d) for d in CT_INPUTS]


def hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_reference_vectors_leaf_hashes_and_roots():
    assert empty_root().hex() == root([]).hex() == CT_EMPTY_ROOT
    assert hexes(CT_LEAVES) == CT_LEAF_HASHES
    for n, expected in CT_ROOTS.items():
        assert root(CT_LEAVES[:n]).hex() == expected, n


@pytest.mark.parametrize(("index", "size"), list(CT_INCLUSION))
def test_reference_vectors_inclusion_proofs(index, size):
    proof = inclusion_proof(index, CT_LEAVES[:size])
    assert hexes(proof) == CT_INCLUSION[index, size]
    assert verify_inclusion(CT_LEAVES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("m", "n"), list(CT_CONSISTENCY))
def test_reference_vectors_consistency_proofs(m, n):
    proof = consistency_proof(m, CT_LEAVES[:n])
    assert hexes(proof) == CT_CONSISTENCY[m, n]
    assert verify_consistency(m, n, bytes.fromhex(CT_ROOTS[m]), bytes.fromhex(CT_ROOTS[n]), proof)


def test_rfc9162_worked_example_of_section_2_1_5():
    """The seven-leaf tree of RFC 9162 section 2.1.5 and the proofs the RFC lists for it."""
    d = [b"d%d" % i for i in range(7)]
    a, b, c, dd, e, f, j = (sha256(b"\x00" + x) for x in d)
    g, h, i = sha256(b"\x01" + a + b), sha256(b"\x01" + c + dd), sha256(b"\x01" + e + f)
    k, l_ = sha256(b"\x01" + g + h), sha256(b"\x01" + i + j)
    leaves = [leaf_hash(x) for x in d]
    assert root(leaves) == sha256(b"\x01" + k + l_)
    assert inclusion_proof(0, leaves) == [b, h, l_]
    assert inclusion_proof(3, leaves) == [c, g, l_]
    assert inclusion_proof(4, leaves) == [f, j, k]
    assert inclusion_proof(6, leaves) == [i, k]
    assert consistency_proof(3, leaves) == [c, dd, g, l_]
    assert consistency_proof(4, leaves) == [l_]
    assert consistency_proof(6, leaves) == [i, j, k]


# --- a million leaves ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def million():
    leaves = [sha256(b"\x00" + i.to_bytes(4, "big")) for i in range(1_000_000)]
    return leaves, MerkleTree(leaves), PymerkleOverLeafHashes(leaves)


def test_million_leaf_root_and_proofs_match_pymerkle(million):
    leaves, tree, reference = million
    assert tree.root() == root(leaves) == reference.get_root()
    for index in (0, 524_287, 524_288, 777_777, 999_999):
        assert tree.inclusion_proof(index) == pymerkle_inclusion(reference, index, len(leaves)), index
    assert tree.consistency_proof(777_777) == pymerkle_consistency(reference, 777_777, len(leaves))


def test_million_leaf_inclusion_proof_has_at_most_20_hashes(million):
    leaves, tree, _ = million
    n = len(leaves)
    assert math.ceil(math.log2(n)) == 20
    # a leaf among the first 2**19 sits in a complete subtree of depth 19 under the root: 20
    # hashes; the last leaf hangs off the right edge, one hash for each power of two taken off
    # 1e6 until one leaf is left (2**19, 2**18, 2**17, 2**16, 2**14, 2**9, then 6 halvings of 64): 12
    for index, expected in [(0, 20), (524_287, 20), (999_999, 12)]:
        proof = tree.inclusion_proof(index)
        assert len(proof) == expected, index
        assert verify_inclusion(leaves[index], index, n, proof, tree.root())
    rng = random.Random(20)
    for index in rng.sample(range(n), 50):
        proof = tree.inclusion_proof(index)
        assert len(proof) <= 20
        assert verify_inclusion(leaves[index], index, n, proof, tree.root())


def test_million_leaf_tree_recurses_only_log2_deep(million):
    leaves, tree, _ = million
    here = len(inspect.stack(0))
    limit = sys.getrecursionlimit()
    # PATH and SUBPROOF nest at most log2(n) deep, each with an MTH at most log2(n) deep
    sys.setrecursionlimit(here + 2 * 20 + 16)
    try:
        top = root(leaves)
        proof = tree.inclusion_proof(999_999)
        proof_c = tree.consistency_proof(777_777)
    finally:
        sys.setrecursionlimit(limit)
    assert verify_inclusion(leaves[-1], 999_999, 1_000_000, proof, top)
    assert verify_consistency(777_777, 1_000_000, tree.root(777_777), top, proof_c)


# --- every corruption is refused ----------------------------------------------------------

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def inclusion_case(index: int, size: int):
    return LEAVES[index], index, size, TREE.inclusion_proof(index, size), TREE.root(size)


def consistency_case(m: int, n: int):
    return m, n, TREE.root(m), TREE.root(n), TREE.consistency_proof(m, n)


@pytest.mark.parametrize(
    ("index", "size"), [(0, 1), (0, 2), (1, 2), (2, 3), (5, 7), (6, 7), (0, 8), (99, 100)]
)
def test_inclusion_rejects_every_single_bit_flip(index, size):
    leaf, _, _, proof, top = inclusion_case(index, size)
    assert verify_inclusion(leaf, index, size, proof, top)
    for bit in range(256):
        assert not verify_inclusion(flipped(leaf, bit), index, size, proof, top)
        assert not verify_inclusion(leaf, index, size, proof, flipped(top, bit))
        for at in range(len(proof)):
            bad = proof[:at] + [flipped(proof[at], bit)] + proof[at + 1 :]
            assert not verify_inclusion(leaf, index, size, bad, top), (at, bit)


@pytest.mark.parametrize(
    ("m", "n"), [(1, 2), (1, 3), (2, 3), (3, 7), (4, 7), (6, 7), (6, 8), (2, 5), (64, 100)]
)
def test_consistency_rejects_every_single_bit_flip(m, n):
    _, _, first, second, proof = consistency_case(m, n)
    assert verify_consistency(m, n, first, second, proof)
    for bit in range(256):
        assert not verify_consistency(m, n, flipped(first, bit), second, proof)
        assert not verify_consistency(m, n, first, flipped(second, bit), proof)
        for at in range(len(proof)):
            bad = proof[:at] + [flipped(proof[at], bit)] + proof[at + 1 :]
            assert not verify_consistency(m, n, first, second, bad), (at, bit)


def test_inclusion_proof_holds_for_no_other_index_and_no_other_tree_head():
    for size in range(1, 49):
        for index in range(size):
            leaf, _, _, proof, top = inclusion_case(index, size)
            for other in range(size):
                if other != index:
                    assert not verify_inclusion(leaf, other, size, proof, top), (index, other, size)
            # an auditor holds tree heads (size, root); the proof fits none but its own
            for other_size in range(index + 1, 65):
                if other_size != size:
                    assert not verify_inclusion(leaf, index, other_size, proof, TREE.root(other_size))


def test_inclusion_rejects_the_reference_probes_for_every_leaf_up_to_128():
    # the probes of certificate-transparency's VerifierCheck: same root, wrong index or size,
    # foreign leaf or root, garbage before or after, a hash removed or inserted
    for size in range(1, 129):
        for index in range(size):
            leaf, _, _, proof, top = inclusion_case(index, size)
            probes = [
                (leaf, index - 1, size, proof, top),
                (leaf, index + 1, size, proof, top),
                (leaf, index ^ 2, size, proof, top),
                (leaf, index, size * 2, proof, top),
                (leaf, index, size // 2, proof, top),
                (leaf_hash(b"WrongLeaf"), index, size, proof, top),
                (leaf, index, size, proof, empty_root()),
                (leaf, index, size, proof, SOME_HASH),
                (leaf, index, size, proof + [b""], top),
                (leaf, index, size, proof + [top], top),
                (leaf, index, size, [b""] + proof, top),
                (leaf, index, size, [top] + proof, top),
                (leaf, index, size, proof + [SOME_HASH], top),
            ]
            if proof:
                probes.append((leaf, index, size, proof[:-1], top))
                probes.append((leaf, index, size, proof[1:], top))
            if len(proof) > 1:
                probes.append((leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], top))
            for probe in probes:
                assert verify_inclusion(*probe) is False, (index, size, probe[1:3])


def test_consistency_proof_holds_for_no_other_pair_of_tree_heads():
    for n in range(1, 33):
        for m in range(1, n):
            _, _, first, second, proof = consistency_case(m, n)
            for m2 in range(0, 33):
                for n2 in range(m2, 33):
                    if (m2, n2) != (m, n):
                        heads = TREE.root(m2), TREE.root(n2)
                        assert not verify_consistency(m2, n2, *heads, proof), (m, n, m2, n2)


def test_consistency_rejects_the_reference_probes_for_every_pair_up_to_128():
    # the probes of certificate-transparency's VerifierConsistencyCheck and transparency-dev's
    # corruptConsistencyProof: wrong sizes, wrong or swapped roots, empty, padded or cut proofs
    for n in range(2, 129):
        for m in range(1, n):
            _, _, first, second, proof = consistency_case(m, n)
            probes = [
                (m - 1, n, first, second, proof),
                (m + 1, n, first, second, proof),
                (m ^ 2, n, first, second, proof),
                (m, n * 2, first, second, proof),
                (m, n // 2, first, second, proof),
                (m, n, SOME_HASH, second, proof),
                (m, n, first, SOME_HASH, proof),
                (m, n, second, first, proof),
                (m, n, first, second, []),
                (m, n, first, second, proof + [b""]),
                (m, n, first, second, proof + [first]),
                (m, n, first, second, proof + [second]),
                (m, n, first, second, proof + [proof[-1]]),
                (m, n, first, second, [b""] + proof),
                (m, n, first, second, [first] + proof),
                (m, n, first, second, [second] + proof),
                (m, n, first, second, [proof[0]] + proof),
                (m, n, first, second, proof[:-1]),
                (m, n, first, second, proof[1:]),
            ]
            for probe in probes:
                assert verify_consistency(*probe) is False, (m, n, probe[:2])


@given(st.data())
def test_any_inclusion_proof_verifies_and_no_bit_flip_does(data):
    size = data.draw(st.integers(1, len(LEAVES)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf, _, _, proof, top = inclusion_case(index, size)
    assert verify_inclusion(leaf, index, size, proof, top)
    assert proof == inclusion_proof(index, LEAVES[:size])
    assert len(proof) <= math.ceil(math.log2(size))
    what = data.draw(st.integers(-2, len(proof) - 1), label="which hash")  # -2 leaf, -1 root
    bit = data.draw(st.integers(0, 255), label="bit")
    if what == -2:
        leaf = flipped(leaf, bit)
    elif what == -1:
        top = flipped(top, bit)
    else:
        proof = proof[:what] + [flipped(proof[what], bit)] + proof[what + 1 :]
    assert not verify_inclusion(leaf, index, size, proof, top)


@given(st.data())
def test_any_consistency_proof_verifies_and_no_bit_flip_does(data):
    n = data.draw(st.integers(2, len(LEAVES)), label="second size")
    m = data.draw(st.integers(1, n - 1), label="first size")
    _, _, first, second, proof = consistency_case(m, n)
    assert verify_consistency(m, n, first, second, proof)
    assert proof == consistency_proof(m, LEAVES[:n])
    what = data.draw(st.integers(-2, len(proof) - 1), label="which hash")  # -2 first, -1 second
    bit = data.draw(st.integers(0, 255), label="bit")
    if what == -2:
        first = flipped(first, bit)
    elif what == -1:
        second = flipped(second, bit)
    else:
        proof = proof[:what] + [flipped(proof[what], bit)] + proof[what + 1 :]
    assert not verify_consistency(m, n, first, second, proof)


def test_consistency_of_equal_or_empty_trees_needs_no_proof():
    top = TREE.root(5)
    assert verify_consistency(5, 5, top, top, [])
    assert verify_consistency(0, 5, empty_root(), top, [])
    assert verify_consistency(0, 0, empty_root(), empty_root(), [])
    assert TREE.consistency_proof(5, 5) == [] and TREE.consistency_proof(0, 5) == []
    assert not verify_consistency(5, 5, top, TREE.root(6), [])
    assert not verify_consistency(5, 5, top, top, [top])
    assert not verify_consistency(0, 5, SOME_HASH, top, [])
    assert not verify_consistency(0, 5, empty_root(), top, [empty_root()])
    assert not verify_consistency(6, 5, TREE.root(6), top, [])


GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, GOOD_ROOT = inclusion_case(5, 7)
MALFORMED = [None, "", "ab" * 32, b"", b"\x00" * 31, b"\x00" * 33, bytearray(32), 0, 1.0, [b"\x00" * 32]]


def test_verifiers_answer_false_to_malformed_input_and_never_raise():
    bad_counts = [-1, -(2**70), 1.0, 5.0, True, None, "5", b"5", 2**80]
    bad_proofs = [None, "proof", b"\x00" * 32, {}, [None], [b"\x00" * 31], [GOOD_PROOF], GOOD_PROOF + [7]]
    for bad in MALFORMED:
        assert verify_inclusion(bad, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, GOOD_ROOT) is False
        assert verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, bad) is False
        bad_item = [bad, *GOOD_PROOF[1:]]
        assert verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, bad_item, GOOD_ROOT) is False
    for bad in bad_counts:
        assert verify_inclusion(GOOD_LEAF, bad, GOOD_SIZE, GOOD_PROOF, GOOD_ROOT) is False
        assert verify_inclusion(GOOD_LEAF, GOOD_INDEX, bad, GOOD_PROOF, GOOD_ROOT) is False
    for bad in bad_proofs:
        assert verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, bad, GOOD_ROOT) is False
    # index at or past the size, and trees with nothing in them
    assert verify_inclusion(GOOD_LEAF, 7, 7, GOOD_PROOF, GOOD_ROOT) is False
    assert verify_inclusion(GOOD_LEAF, 0, 0, [], empty_root()) is False
    assert verify_inclusion(GOOD_LEAF, 1, 0, [], GOOD_LEAF) is False
    assert verify_inclusion(GOOD_LEAF, 2, 1, [], GOOD_LEAF) is False
    assert verify_inclusion(GOOD_LEAF, 0, 1, [], GOOD_LEAF) is True  # one leaf: it is the root

    m, n, first, second, proof = consistency_case(3, 7)
    for bad in MALFORMED:
        assert verify_consistency(m, n, bad, second, proof) is False
        assert verify_consistency(m, n, first, bad, proof) is False
        assert verify_consistency(m, n, first, second, [bad, *proof[1:]]) is False
        assert verify_consistency(m, n, first, second, [*proof[:-1], bad]) is False
    for bad in bad_counts:
        assert verify_consistency(bad, n, first, second, proof) is False
        assert verify_consistency(m, bad, first, second, proof) is False
    for bad in bad_proofs:
        assert verify_consistency(m, n, first, second, bad) is False
    # a power-of-two first tree is not in its own proof: its root goes first in the check
    _, _, first4, second4, proof4 = consistency_case(4, 7)
    assert verify_consistency(4, 7, b"\x00" * 31, second4, proof4) is False


@given(
    st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=4), st.integers(-5, 5)),
    st.integers(-3, 2**65),
    st.integers(-3, 2**65),
    st.lists(st.one_of(st.binary(min_size=30, max_size=34), st.none(), st.integers()), max_size=70),
)
def test_verifiers_never_raise_on_arbitrary_input(blob, a, b, proof):
    assert verify_inclusion(blob, a, b, proof, GOOD_ROOT) in (True, False)
    assert verify_inclusion(GOOD_LEAF, a, b, proof, blob) in (True, False)
    assert verify_consistency(a, b, blob, GOOD_ROOT, proof) in (True, False)
    assert verify_consistency(a, b, GOOD_ROOT, blob, proof) is False or blob == GOOD_ROOT


# --- the growing tree ---------------------------------------------------------------------


def test_tree_grown_one_leaf_at_a_time_matches_the_tree_built_at_once():
    grown = MerkleTree()
    for n, leaf in enumerate(LEAVES[:300], start=1):
        assert grown.append(leaf) == n - 1
        assert grown.size == len(grown) == n
        whole = MerkleTree(LEAVES[:n])
        assert grown.root() == whole.root() == TREE.root(n)
        assert grown.inclusion_proof(n - 1) == whole.inclusion_proof(n - 1)
        assert grown.inclusion_proof(0) == whole.inclusion_proof(0)
        assert grown.consistency_proof(n // 2 or 1) == whole.consistency_proof(n // 2 or 1)
        assert grown.leaf_hash(n - 1) == leaf


@given(st.integers(0, 600), st.integers(0, 600))
def test_roots_and_proofs_at_an_earlier_size_are_those_of_that_tree(first, grown_by):
    then = MerkleTree(LEAVES[:first])
    now = MerkleTree(LEAVES[:first])
    now.extend(LEAVES[first : first + grown_by])
    assert now.size == first + grown_by
    assert now.root(first) == then.root() == root(LEAVES[:first])
    if first:
        index = first // 3
        assert now.inclusion_proof(index, first) == then.inclusion_proof(index)
        proof = now.consistency_proof(first)
        assert verify_consistency(first, now.size, then.root(), now.root(), proof)


def test_tree_refuses_leaf_hashes_that_are_not_32_bytes():
    for bad in [b"", b"\x00" * 31, b"\x00" * 33, "ab" * 32, bytearray(32), None]:
        with pytest.raises(MerkleError, match="leaf 3 is not a 32-byte leaf hash"):
            MerkleTree([*LEAVES[:3], bad])
        tree = MerkleTree(LEAVES[:5])
        with pytest.raises(MerkleError, match="leaf 5 is not a 32-byte leaf hash"):
            tree.append(bad)
        assert tree.size == 5 and tree.root() == TREE.root(5)
        with pytest.raises(MerkleError):
            root([bad])


def test_proof_requests_outside_the_tree_are_refused_with_the_reason():
    tree = MerkleTree(LEAVES[:10])
    with pytest.raises(MerkleError, match="leaf index 10 is not in a tree of 10 leaves"):
        tree.inclusion_proof(10)
    with pytest.raises(MerkleError, match="leaf index -1 is not in a tree of 10 leaves"):
        tree.inclusion_proof(-1)
    with pytest.raises(MerkleError, match="leaf index 4 is not in a tree of 4 leaves"):
        tree.inclusion_proof(4, 4)
    with pytest.raises(MerkleError, match="tree size 11 is not between 0 and 10"):
        tree.root(11)
    with pytest.raises(MerkleError, match="first tree size 11 is not between 0 and 10"):
        tree.consistency_proof(11)
    with pytest.raises(MerkleError, match="first tree size 6 is not between 0 and 5"):
        tree.consistency_proof(6, 5)
    with pytest.raises(MerkleError):
        inclusion_proof(0, [])
    assert isinstance(MerkleError("x"), ValueError)
    assert merkle.HASH_SIZE == 32
