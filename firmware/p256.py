# ECDSA on NIST P-256 with SHA-256 (FIPS 186-5), deterministic nonces (RFC 6979)
# and low-S signatures. Pure Python for MicroPython and CPython alike.
#
# Speed on a microcontroller comes from three choices: points in Jacobian
# coordinates (no inversion per addition), a fixed-base comb table for k*G
# (no doublings of G at signing time, 43 doublings and at most 43 mixed
# additions per signature), and inversions by the extended Euclidean algorithm,
# which the MicroPython big-int engine runs several times faster than pow(x, p-2, p).
# The table is kept as one bytearray (4 KiB) to spare the heap: a node's RAM
# is scarcer than its time (7 teeth would double the table for a third less time).
#
# Not constant-time: a key in a board's flash is only as safe as the board;
# the inversion of the nonce is blinded to make the cheapest timing leak harder.

import hashlib
import os

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

# FIPS 186-5 / SEC 2, curve secp256r1 (a = -3); plain globals, not const(): a folded
# big integer would be copied into every function that uses it
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_TEETH = const(6)  # comb width: 2**6 - 1 = 63 precomputed points
_SPACING = const((256 + _TEETH - 1) // _TEETH)  # 43 columns


def _inv(a, m):
    # extended Euclidean algorithm; a must be in [1, m-1] and m prime
    x0, x1, b = 1, 0, m
    while b:
        q = a // b
        a, b = b, a - q * b
        x0, x1 = x1, x0 - q * x1
    return x0 % m


def _double(X1, Y1, Z1):
    # Jacobian doubling for a = -3, "dbl-2001-b" (Bernstein-Lange EFD)
    if not Y1:
        return 0, 1, 0
    delta = Z1 * Z1 % P
    gamma = Y1 * Y1 % P
    beta = X1 * gamma % P
    alpha = 3 * (X1 - delta) * (X1 + delta) % P
    X3 = (alpha * alpha - 8 * beta) % P
    Z3 = ((Y1 + Z1) * (Y1 + Z1) - gamma - delta) % P
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % P
    return X3, Y3, Z3


def _add_affine(X1, Y1, Z1, x2, y2):
    # Jacobian + affine ("madd", 8M + 3S); Z1 == 0 is the point at infinity
    if not Z1:
        return x2, y2, 1
    T1 = Z1 * Z1 % P
    H = (x2 * T1 - X1) % P
    R = (y2 * T1 * Z1 - Y1) % P
    if not H:
        if not R:
            return _double(x2, y2, 1)
        return 0, 1, 0
    HH = H * H % P
    HHH = H * HH % P
    V = X1 * HH % P
    X3 = (R * R - HHH - 2 * V) % P
    Y3 = (R * (V - X3) - Y1 * HHH) % P
    Z3 = Z1 * H % P
    return X3, Y3, Z3


def _to_affine(X, Y, Z):
    if not Z:
        raise ValueError("point at infinity")
    zi = _inv(Z, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def _build_comb():
    # T[j] = sum over set bits i of j of 2**(i*SPACING) * G, for j = 1 .. 2**TEETH - 1,
    # stored affine as x || y, 64 bytes per entry, entry j at offset 64*(j-1).
    # The table is allocated first, while the heap is still unfragmented.
    table = bytearray(64 * ((1 << _TEETH) - 1))
    fb = int.from_bytes
    X, Y, Z = GX, GY, 1
    for i in range(_TEETH):
        x, y = _to_affine(X, Y, Z)
        o = 64 * ((1 << i) - 1)
        table[o:o + 32] = x.to_bytes(32, "big")
        table[o + 32:o + 64] = y.to_bytes(32, "big")
        if i + 1 < _TEETH:
            for _ in range(_SPACING):
                X, Y, Z = _double(X, Y, Z)
    for j in range(1, 1 << _TEETH):
        if not j & (j - 1):
            continue  # a single tooth: stored above
        X, Y, Z = 0, 1, 0
        for i in range(_TEETH):
            if j >> i & 1:
                o = 64 * ((1 << i) - 1)
                X, Y, Z = _add_affine(X, Y, Z, fb(table[o:o + 32], "big"), fb(table[o + 32:o + 64], "big"))
        x, y = _to_affine(X, Y, Z)
        o = 64 * (j - 1)
        table[o:o + 32] = x.to_bytes(32, "big")
        table[o + 32:o + 64] = y.to_bytes(32, "big")
    return table


_comb = None


def prepare():
    """Build the comb table now (a node does it at boot, while the heap is unfragmented)."""
    global _comb
    if _comb is None:
        _comb = _build_comb()
    return _comb


def base_mul(k):
    """k * G as affine (x, y), for 1 <= k < N."""
    table = prepare()
    fb = int.from_bytes
    mask = (1 << _SPACING) - 1
    teeth = [k >> (i * _SPACING) & mask for i in range(_TEETH - 1, -1, -1)]
    X, Y, Z = 0, 1, 0
    for col in range(_SPACING - 1, -1, -1):
        j = 0
        for t in teeth:
            j = (j << 1) | (t >> col & 1)
        X, Y, Z = _double(X, Y, Z)
        if j:
            o = 64 * (j - 1)
            X, Y, Z = _add_affine(X, Y, Z, fb(table[o:o + 32], "big"), fb(table[o + 32:o + 64], "big"))
    return _to_affine(X, Y, Z)


def _hmac(key, data):
    # HMAC-SHA256 (RFC 2104), key of 32 bytes
    k = key + bytes(32)
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
    inner.update(data)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))
    outer.update(inner.digest())
    return outer.digest()


def _nonces(d, h1):
    # RFC 6979 section 3.2, qlen = hlen = 256: yields candidate nonces k
    x = d.to_bytes(32, "big")
    h = (int.from_bytes(h1, "big") % N).to_bytes(32, "big")  # bits2octets(h1)
    V = b"\x01" * 32
    K = _hmac(b"\x00" * 32, V + b"\x00" + x + h)
    V = _hmac(K, V)
    K = _hmac(K, V + b"\x01" + x + h)
    V = _hmac(K, V)
    while True:
        V = _hmac(K, V)
        k = int.from_bytes(V, "big")
        if 1 <= k < N:
            yield k
        K = _hmac(K, V + b"\x00")
        V = _hmac(K, V)


def _check_scalar(d):
    if not 1 <= d < N:
        raise ValueError("private key out of range 1..n-1")


def sign_digest(d, h1, low_s=True):
    """ECDSA signature (r, s) over the SHA-256 digest h1 with private scalar d."""
    _check_scalar(d)
    e = int.from_bytes(h1, "big")
    for k in _nonces(d, h1):
        r = base_mul(k)[0] % N
        if not r:
            continue
        b = int.from_bytes(os.urandom(32), "big") % (N - 1) + 1
        s = _inv(k * b % N, N) * b * (e + r * d) % N
        if not s:
            continue
        if low_s and s > N >> 1:
            s = N - s
        return r, s


def sign(d, data):
    """Raw 64-byte signature r || s (the COSE ES256 form) over SHA-256(data)."""
    r, s = sign_digest(d, hashlib.sha256(data).digest())
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_key(d):
    """Uncompressed SEC 1 public key, 65 bytes: 0x04 || x || y."""
    _check_scalar(d)
    x, y = base_mul(d)
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
