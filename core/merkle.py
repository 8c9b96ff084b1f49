"""RFC 9162 Merkle trees over SHA-256: how one reading is proven among many.

govchain-edge builds two kinds of tree with this module:

- a batch tree over the device messages of one batch; the gateway signs its
  root inside the batch, so any one message can be shown to be in the batch;
- an epoch tree over the batch hashes of a period; its tree head (size, root)
  is what is anchored on the govchain, so any one batch can be shown to be in
  the epoch.

A proof bundle carries one inclusion path per tree; anyone can check it with
SHA-256 alone. A consistency proof shows that a tree head published later for
the same growing tree contains every leaf an earlier head did.

Trees are built over leaf hashes, HASH(0x00 || message), not the messages: the
gateway keeps the hashes. The code follows RFC 9162 section 2.1 in its own
names (MTH, PATH, PROOF, SUBPROOF; fn, sn, fr, sr) and order, so the two can be
read side by side. Generating a proof for a bad request raises MerkleError; the
verifiers never raise, they answer False for anything malformed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from .errors import GovedgeError

HASH_SIZE = 32  # SHA-256, the hash of RFC 9162's SHA-256 profile


class MerkleError(GovedgeError, ValueError):
    """A tree or proof request that cannot be answered; the text says which input is wrong."""

    code = "merkle"


def leaf_hash(data: bytes) -> bytes:
    # RFC 9162 section 2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    # RFC 9162 section 2.1.1: HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    # RFC 9162 section 2.1.1: MTH({}) = HASH(), the hash of an empty string
    return hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    # RFC 9162 section 2.1.1: k is the largest power of two smaller than n (n > 1)
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """A tree that grows one leaf hash at a time, as a batch or an epoch does.

    It keeps every leaf hash and the hash of every complete subtree (about twice
    the leaf hashes in memory), so a root is O(log n) hashes and a proof
    O(log n) look-ups plus O(log^2 n) hashes at most. Roots and proofs can be
    asked for any earlier size too: the tree head anchored then is the one an
    auditor holds.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()):
        leaves = list(leaf_hashes)
        for i, h in enumerate(leaves):
            _check_leaf_hash(h, i)
        # _levels[h][i] = MTH of the complete subtree of 2**h leaves starting at leaf i * 2**h
        self._levels = [leaves]
        level = leaves
        sha256 = hashlib.sha256
        while len(level) > 1:
            level = [sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
            self._levels.append(level)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return self._levels[0][index]

    def append(self, leaf_hash: bytes) -> int:
        """Add one leaf hash; returns its leaf index."""
        index = self.size
        _check_leaf_hash(leaf_hash, index)
        levels = self._levels
        levels[0].append(leaf_hash)
        h = 0
        # a level with an even count has just completed a pair: its parent is complete too
        while len(levels[h]) % 2 == 0:
            if h + 1 == len(levels):
                levels.append([])
            levels[h + 1].append(node_hash(levels[h][-2], levels[h][-1]))
            h += 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH(D[tree_size]), the root over the first tree_size leaves (default: all)."""
        n = self._check_size(tree_size)
        return self._mth(0, n)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """PATH(index, D[tree_size]): the audit path of one leaf, nearest sibling first."""
        n = self._check_size(tree_size)
        self._check_index(index, n)
        return self._path(index, 0, n)

    def consistency_proof(self, first_size: int, second_size: int | None = None) -> list[bytes]:
        """PROOF(first_size, D[second_size]): shows the larger tree extends the smaller.

        RFC 9162 defines it for 0 < first_size < second_size; for 0 or an equal
        size there is nothing to prove and the proof is empty.
        """
        n = self._check_size(second_size)
        if not _is_count(first_size) or first_size > n:
            raise MerkleError(f"first tree size {first_size!r} is not between 0 and {n}")
        if first_size == 0:
            return []
        return self._subproof(first_size, 0, n, True)

    def _mth(self, start: int, end: int) -> bytes:
        # RFC 9162 section 2.1.1, for D[start:end]; recursion only down the right edge
        n = end - start
        if n == 0:
            return empty_root()
        if n & (n - 1) == 0:
            # a complete subtree; every range the RFC's recursion visits is aligned to its size
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._mth(start, start + k), self._mth(start + k, end))

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        # RFC 9162 section 2.1.3.1: PATH(m, D[n]) for D[n] = D[start:end]
        n = end - start
        if n == 1:
            # PATH(0, {d(0)}) = {}
            return []
        k = _split(n)
        if m < k:
            # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            return self._path(m, start, start + k) + [self._mth(start + k, end)]
        # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
        return self._path(m - k, start + k, end) + [self._mth(start, start + k)]

    def _subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        # RFC 9162 section 2.1.4.1: SUBPROOF(m, D[n], b) for D[n] = D[start:end]
        n = end - start
        if m == n:
            # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
            return [] if b else [self._mth(start, end)]
        k = _split(n)
        if m <= k:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            return self._subproof(m, start, start + k, b) + [self._mth(start + k, end)]
        # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
        return self._subproof(m - k, start + k, end, False) + [self._mth(start, start + k)]

    def _check_size(self, tree_size: int | None) -> int:
        if tree_size is None:
            return self.size
        if not _is_count(tree_size) or tree_size > self.size:
            raise MerkleError(f"tree size {tree_size!r} is not between 0 and {self.size}")
        return tree_size

    @staticmethod
    def _check_index(index: int, tree_size: int) -> None:
        if not _is_count(index) or index >= tree_size:
            raise MerkleError(f"leaf index {index!r} is not in a tree of {tree_size} leaves")


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over the given leaf hashes (RFC 9162 section 2.1.1)."""
    return MerkleTree(leaf_hashes).root()


class RootOfStream:
    """MTH(D[n]) of leaf hashes that come one at a time, in O(log n) memory: it keeps only the roots of
    the complete subtrees along the right edge (a year of readings need not be held to commit to them)."""

    def __init__(self):
        self.size = 0
        self._edge: list[tuple[int, bytes]] = []  # (leaves, MTH) of complete subtrees, largest first

    def append(self, leaf_hash: bytes) -> None:
        _check_leaf_hash(leaf_hash, self.size)
        self.size += 1
        edge, size, h = self._edge, 1, leaf_hash
        while edge and edge[-1][0] == size:  # two complete subtrees of one size make the next
            size, h = size * 2, node_hash(edge.pop()[1], h)
        edge.append((size, h))

    def root(self) -> bytes:
        # RFC 9162 section 2.1.1: the split at the largest power of two below n is the left edge subtree,
        # so folding the right edge from the smallest subtree up gives MTH(D[n])
        if not self._edge:
            return empty_root()
        h = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            h = node_hash(left, h)
        return h


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) over the given leaf hashes (RFC 9162 section 2.1.3.1)."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) over the given leaf hashes (RFC 9162 section 2.1.4.1)."""
    return MerkleTree(leaf_hashes).consistency_proof(m)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True if proof shows leaf_hash at index in the tree of tree_size leaves with this root."""
    # RFC 9162 section 2.1.3.2; hash = leaf_hash, leaf_index = index, inclusion_path = proof
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_count(index) and _is_count(tree_size)):
        return False
    if not isinstance(proof, (list, tuple)):
        return False
    # 1. leaf_index greater than or equal to tree_size: fail
    if index >= tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1
    fn, sn = index, tree_size - 1
    # 3. r = hash
    r = leaf_hash
    # 4. for each value p in the inclusion_path array
    for p in proof:
        if not _is_hash(p):
            return False
        # 4a. sn is 0: the path is longer than the tree is deep
        if sn == 0:
            return False
        # 4b. LSB(fn) set, or fn equal to sn: p is a left sibling
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c. right-shift fn and sn once
        fn >>= 1
        sn >>= 1
    # 5. sn is 0 and r equals root_hash
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    first_size: int, second_size: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True if proof shows the tree (second_size, second_root) extends (first_size, first_root).

    The algorithm of RFC 9162 section 2.1.4.2 covers 0 < first_size < second_size.
    Outside it there is nothing to prove, and only an empty proof is accepted:
    for equal sizes the roots must be equal, for a first size of 0 the first
    root must be MTH({}).
    """
    if not (_is_count(first_size) and _is_count(second_size)):
        return False
    if not (_is_hash(first_root) and _is_hash(second_root) and isinstance(proof, (list, tuple))):
        return False
    if first_size > second_size:
        return False
    if first_size == second_size:
        return len(proof) == 0 and hmac.compare_digest(first_root, second_root)
    if first_size == 0:
        return len(proof) == 0 and hmac.compare_digest(first_root, empty_root())
    # RFC 9162 section 2.1.4.2; first = first_size, second = second_size,
    # first_hash = first_root, second_hash = second_root, consistency_path = proof
    # 1. an empty consistency_path: fail
    if len(proof) == 0:
        return False
    # 2. first an exact power of 2: prepend first_hash to consistency_path
    consistency_path = list(proof)
    if first_size & (first_size - 1) == 0:
        consistency_path.insert(0, first_root)
    if not all(_is_hash(c) for c in consistency_path):
        return False
    # 3. fn = first - 1, sn = second - 1
    fn, sn = first_size - 1, second_size - 1
    # 4. while LSB(fn) is set, right-shift fn and sn
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr and sr start at the first value of consistency_path
    fr = sr = consistency_path[0]
    # 6. for each subsequent value c in consistency_path
    for c in consistency_path[1:]:
        # 6a. sn is 0: the path is longer than the tree is deep
        if sn == 0:
            return False
        # 6b. LSB(fn) set, or fn equal to sn: c is a left sibling in both trees
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            # c is only in the second tree, to the right
            sr = node_hash(sr, c)
        # 6c. right-shift fn and sn once
        fn >>= 1
        sn >>= 1
    # 7. fr equals first_hash, sr equals second_hash, and sn is 0
    return hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root) and sn == 0


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _check_leaf_hash(value: object, index: int) -> None:
    if not _is_hash(value):
        raise MerkleError(
            f"leaf {index} is not a {HASH_SIZE}-byte leaf hash (got {type(value).__name__}"
            + (f" of {len(value)} bytes)" if isinstance(value, (bytes, bytearray)) else ")")
        )
