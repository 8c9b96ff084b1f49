"""The firmware's ECDSA P-256 signatures are the ones RFC 6979 and python-ecdsa give.

The signatures are made under MicroPython from the .mpy firmware (what boards
run) and, with hypothesis, under CPython from firmware/p256.py directly (what a
Linux node runs). The references are the RFC's own vectors, python-ecdsa and
cryptography.
"""

from __future__ import annotations

import hashlib
import random

import ecdsa
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ecdsa.util import sigencode_string_canonize
from hypothesis import given, settings
from hypothesis import strategies as st

from support import MPY_PRELUDE, N, firmware, hex_lines, public_key, sec1, sig_values


@pytest.fixture(scope="module")
def fw_p256():
    return firmware("p256")


def ecdsa_reference(d: int, msg: bytes) -> bytes:
    """python-ecdsa's RFC 6979 signature with canonical (low) S, raw r || s."""
    sk = ecdsa.SigningKey.from_secret_exponent(d, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    return sk.sign_deterministic(msg, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize)


def cryptography_accepts(d: int, msg: bytes, sig: bytes) -> bool:
    r, s = sig_values(sig)
    try:
        public_key(d).verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- RFC 6979 appendix A.2.5: ECDSA, 256 bits (prime field), with SHA-256 -----------

RFC6979_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC6979_SHA256 = {
    b"sample": (
        0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,  # k
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,  # r
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,  # s
    ),
    b"test": (
        0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    ),
}


@pytest.fixture(scope="module")
def rfc6979_under_micropython(micropython):
    """For each RFC message: first nonce, raw (r, s), sign() output; plus the public key."""
    script = MPY_PRELUDE + (
        "import p256, hashlib\n"
        "d = %d\n"
        "out(p256.public_key(d))\n"
        "for msg in (b'sample', b'test'):\n"
        "    h = hashlib.sha256(msg).digest()\n"
        "    k = next(p256._nonces(d, h))\n"
        "    r, s = p256.sign_digest(d, h, low_s=False)\n"
        "    out(k.to_bytes(32, 'big'))\n"
        "    out(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))\n"
        "    out(p256.sign(d, msg))\n"
    ) % RFC6979_X
    lines = hex_lines(micropython(script))
    assert len(lines) == 7
    pub = lines[0]
    per_msg = {}
    for i, msg in enumerate((b"sample", b"test")):
        k, raw, sig = lines[1 + 3 * i: 4 + 3 * i]
        per_msg[msg] = (int.from_bytes(k, "big"), sig_values(raw), sig)
    return pub, per_msg


def test_rfc6979_a25_public_key_under_micropython(rfc6979_under_micropython):
    pub, _ = rfc6979_under_micropython
    assert pub == b"\x04" + RFC6979_UX.to_bytes(32, "big") + RFC6979_UY.to_bytes(32, "big")


@pytest.mark.parametrize("msg", sorted(RFC6979_SHA256))
def test_rfc6979_a25_nonce_and_r_under_micropython(rfc6979_under_micropython, msg):
    k_expected, r_expected, s_expected = RFC6979_SHA256[msg]
    _, per_msg = rfc6979_under_micropython
    k, (r_raw, s_raw), sig = per_msg[msg]
    assert k == k_expected
    assert r_raw == r_expected
    # without normalisation the signature is the RFC's own
    assert s_raw == s_expected
    assert sig_values(sig)[0] == r_expected


@pytest.mark.parametrize("msg", sorted(RFC6979_SHA256))
def test_rfc6979_a25_signature_is_the_rfc_one_normalised_to_low_s(rfc6979_under_micropython, msg):
    _, r_expected, s_expected = RFC6979_SHA256[msg]
    _, per_msg = rfc6979_under_micropython
    r, s = sig_values(per_msg[msg][2])
    assert r == r_expected
    # "sample" has the RFC's s above n/2, so the low-S branch is exercised
    assert s in (s_expected, N - s_expected)
    assert s <= N // 2


@pytest.mark.parametrize("msg", sorted(RFC6979_SHA256))
def test_rfc6979_a25_under_cpython(fw_p256, msg):
    k_expected, r_expected, s_expected = RFC6979_SHA256[msg]
    h = hashlib.sha256(msg).digest()
    assert next(fw_p256._nonces(RFC6979_X, h)) == k_expected
    assert fw_p256.sign_digest(RFC6979_X, h, low_s=False) == (r_expected, s_expected)
    r, s = sig_values(fw_p256.sign(RFC6979_X, msg))
    assert (r, min(s_expected, N - s_expected)) == (r_expected, s)


# --- many keys and messages in one MicroPython process ------------------------------


def _batch_cases() -> list[tuple[int, bytes]]:
    rng = random.Random(20241129)
    keys = [1, 2, 3, N - 1, N - 2, N // 2, N // 2 + 1, 2**255, 2**128 + 1, RFC6979_X]
    keys += [rng.randrange(1, N) for _ in range(30)]
    # lengths around SHA-256 block and padding boundaries, plus a long one
    lengths = [0, 1, 55, 56, 64, 1000]
    cases = []
    for i, d in enumerate(keys):
        for j, n in enumerate(lengths):
            cases.append((d, rng.randbytes(n) if (i + j) % 3 else bytes([i, j]) * (n // 2) + b"x" * (n % 2)))
    return cases


BATCH = _batch_cases()


@pytest.fixture(scope="module")
def batch_signed(micropython):
    """(d, msg, signature, public key) for every BATCH case, all from one MicroPython run."""
    stdin = "".join("%x:%s\n" % (d, msg.hex()) for d, msg in BATCH).encode()
    script = MPY_PRELUDE + (
        "import p256\n"
        "for line in sys.stdin.read().split():\n"
        "    d, msg = line.split(':')\n"
        "    d = int(d, 16)\n"
        "    out(p256.sign(d, binascii.unhexlify(msg)))\n"
        "    out(p256.public_key(d))\n"
    )
    lines = hex_lines(micropython(script, stdin=stdin))
    assert len(lines) == 2 * len(BATCH)
    return [(d, msg, lines[2 * i], lines[2 * i + 1]) for i, (d, msg) in enumerate(BATCH)]


def test_micropython_signatures_equal_python_ecdsa_byte_for_byte(batch_signed):
    assert len(set(BATCH)) >= 200
    mismatches = [
        (hex(d), msg[:16].hex(), len(msg))
        for d, msg, sig, _ in batch_signed
        if sig != ecdsa_reference(d, msg)
    ]
    assert not mismatches, f"{len(mismatches)} of {len(batch_signed)} differ, e.g. {mismatches[:3]}"


def test_micropython_signatures_verify_with_cryptography(batch_signed):
    bad = [(hex(d), len(msg)) for d, msg, sig, _ in batch_signed if not cryptography_accepts(d, msg, sig)]
    assert not bad


def test_micropython_public_keys_equal_cryptography(batch_signed):
    bad = [hex(d) for d, _, _, pub in batch_signed if pub != sec1(d)]
    assert not bad


def test_micropython_signatures_are_low_s(batch_signed):
    for d, msg, sig, _ in batch_signed:
        r, s = sig_values(sig)
        assert 0 < r < N and 0 < s <= N // 2, (hex(d), msg.hex())


# --- hypothesis under CPython, firmware/p256.py imported directly --------------------

scalars = st.integers(min_value=1, max_value=N - 1)


@settings(max_examples=300)
@given(d=scalars, msg=st.binary(max_size=300))
def test_cpython_signature_equals_python_ecdsa(fw_p256, d, msg):
    assert fw_p256.sign(d, msg) == ecdsa_reference(d, msg)


@settings(max_examples=120)
@given(d=scalars, msg=st.binary(max_size=200))
def test_cpython_signature_is_low_s_and_verifies(fw_p256, d, msg):
    sig = fw_p256.sign(d, msg)
    r, s = sig_values(sig)
    assert 0 < r < N and 0 < s <= N // 2
    assert cryptography_accepts(d, msg, sig)


@settings(max_examples=120)
@given(d=scalars)
def test_cpython_public_key_equals_cryptography(fw_p256, d):
    assert fw_p256.public_key(d) == sec1(d)


@settings(max_examples=60)
@given(d=scalars, h=st.binary(min_size=32, max_size=32))
def test_cpython_sign_digest_low_s_is_the_negation_of_the_raw_s(fw_p256, d, h):
    # the raw s and the normalised s are the two roots n-s and s of the same signature
    r_raw, s_raw = fw_p256.sign_digest(d, h, low_s=False)
    r, s = fw_p256.sign_digest(d, h)
    assert r == r_raw
    assert s == min(s_raw, N - s_raw)


@pytest.mark.parametrize("d", [0, -1, N, N + 1])
def test_out_of_range_private_key_is_refused(fw_p256, d):
    with pytest.raises(ValueError):
        fw_p256.sign(d, b"x")
    with pytest.raises(ValueError):
        fw_p256.public_key(d)


def test_public_key_matches_cryptography_at_range_edges(fw_p256):
    for d in (1, 2, N - 1, N - 2):
        assert fw_p256.public_key(d) == sec1(d)
