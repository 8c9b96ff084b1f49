"""Shared helpers for the signed-reading tests.

Everything here is built from libraries nobody in this project wrote (cbor2,
cryptography, pycose, python-ecdsa), so the tests hold the firmware and the
host verifier against outside implementations, not against each other.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import importlib
import struct
import sys
import time
from pathlib import Path
from collections.abc import Mapping
from dataclasses import dataclass
from unittest import mock

import cbor2
import ecdsa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from govedge.tools.field.firmware import FIRMWARE_DIR

N = ecdsa.NIST256p.order  # P-256 group order, from python-ecdsa
ALG_ES256 = -7
ALG_ES384 = -35


_firmware_modules: dict = {}


def firmware(name: str):
    """A firmware module imported under CPython straight from firmware/.

    The firmware imports its siblings by bare name (import cbor), as on a board; the
    folder is on sys.path only while importing and the bare names are taken out of
    sys.modules again, so nothing else in the test process can pick them up by accident.
    """
    if name not in _firmware_modules:
        before = set(sys.modules)
        sys.path.insert(0, str(FIRMWARE_DIR))
        try:
            _firmware_modules[name] = importlib.import_module(name)
        finally:
            sys.path.remove(str(FIRMWARE_DIR))
            for added in set(sys.modules) - before:
                if str(getattr(sys.modules[added], "__file__", "")).startswith(str(FIRMWARE_DIR)):
                    del sys.modules[added]
    return _firmware_modules[name]


def scalar(label: str) -> int:
    """A private scalar in 1..n-1 derived from a label, so keys are fixed across runs."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (N - 1) + 1


def private_key(d: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(d, ec.SECP256R1())


def public_key(d: int) -> ec.EllipticCurvePublicKey:
    return private_key(d).public_key()


def sec1(d: int) -> bytes:
    """Uncompressed SEC 1 point of d, as cryptography computes it."""
    return public_key(d).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def lookup(*keys: ec.EllipticCurvePublicKey, device_id: str | None = None):
    """A key registry for govedge.core.wire.verify: the given keys for device_id (or any device)."""

    def keys_of(dev: str):
        if device_id is not None and dev != device_id:
            raise KeyError(dev)
        return list(keys)

    return keys_of


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 4.4, encoded by cbor2
    return cbor2.dumps(["Signature1", protected, b"", payload])


def es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Raw r || s ES256 signature over data, made by cryptography."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def protected_header(kid=b"sensor-1", alg=ALG_ES256, extra=None) -> bytes:
    """Encoded protected header; None leaves alg or kid out."""
    header = {}
    if alg is not None:
        header[1] = alg
    if kid is not None:
        header[4] = kid
    header.update(extra or {})
    return cbor2.dumps(header)


def cose_sign1(
    key: ec.EllipticCurvePrivateKey,
    payload,
    protected=None,
    unprotected=None,
    tag: int | None = 18,
    signature: bytes | None = None,
) -> bytes:
    """A COSE_Sign1 with a valid ES256 signature over arbitrary contents.

    payload and protected may be bytes or a Python value (encoded with cbor2), so
    tests can craft messages whose signature is fine but whose contents are wrong.
    """
    if protected is None:
        protected = protected_header()
    if not isinstance(protected, bytes):
        protected = cbor2.dumps(protected)
    if not isinstance(payload, bytes):
        payload = cbor2.dumps(payload)
    if signature is None:
        signature = es256(key, sig_structure(protected, payload))
    body = [protected, {} if unprotected is None else unprotected, payload, signature]
    return cbor2.dumps(body if tag is None else cbor2.CBORTag(tag, body))


def senml(seq=1, bt=1_732_857_600, records=None, **first_extra):
    """A SenML pack (list of records) as plain Python values for cbor2."""
    if records is None:
        records = [{0: "temp", 1: "Cel", 2: 21.5}]
    records = [dict(r) for r in records]
    if seq is not None:
        records[0]["seq"] = seq
    if bt is not None:
        records[0][-3] = bt
    records[0].update(first_extra)
    return records


def sig_values(sig: bytes) -> tuple[int, int]:
    assert len(sig) == 64
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


class _Cbor2ListsAtTop:
    # pycose 1.1.0 was written for cbor2 < 6, which returned lists and dicts inside tags
    def __getattr__(self, name):
        return getattr(cbor2, name)

    @staticmethod
    def loads(data):
        item = cbor2.loads(data)
        if isinstance(item, cbor2.CBORTag) and isinstance(item.value, tuple):
            value = [dict(x) if isinstance(x, Mapping) else x for x in item.value]
            item = cbor2.CBORTag(item.tag, value)
        return item


@contextlib.contextmanager
def pycose_with_cbor2_6():
    from pycose.messages import cosemessage

    with mock.patch.object(cosemessage, "cbor2", _Cbor2ListsAtTop()):
        yield


def mpy_literal(value) -> str:
    """MicroPython source text that builds value exactly (floats via their bits).

    Decimal float literals are avoided because MicroPython's parser may round them
    differently from CPython; strings and bytes go through hex to dodge escapes.
    """
    if value is None or value is True or value is False:
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return "F('%s')" % struct.pack(">d", value).hex()
    if isinstance(value, str):
        return "U('%s')" % value.encode("utf-8").hex()
    if isinstance(value, (bytes, bytearray)):
        return "B('%s')" % bytes(value).hex()
    if isinstance(value, list):
        return "[" + ", ".join(mpy_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(mpy_literal(v) + ", " for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{mpy_literal(k)}: {mpy_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, cbor2.CBORTag):
        return f"T({value.tag}, {mpy_literal(value.value)})"
    raise TypeError(type(value))


# prelude for MicroPython scripts that use mpy_literal values
MPY_PRELUDE = """\
import binascii, struct, sys
def B(h):
    return binascii.unhexlify(h)
def U(h):
    return binascii.unhexlify(h).decode()
def F(h):
    return struct.unpack('>d', binascii.unhexlify(h))[0]
def out(b):
    sys.stdout.write(binascii.hexlify(b).decode() + '\\n')
"""


def hex_lines(stdout: str) -> list[bytes]:
    return [binascii.unhexlify(line) for line in stdout.split()]


@dataclass(frozen=True)
class SignedReading:
    """A reading signed by the firmware under MicroPython, with what went into it."""

    d: int
    device_id: str
    seq: int
    time: int | None
    measurements: list
    message: bytes
    public_key: bytes  # SEC 1 uncompressed, as the firmware computed it


# what conftest's firmware_readings has the firmware sign under MicroPython
READINGS = {
    "street": dict(
        d=scalar("lamp-17"),
        device_id="lamp-17.koeln",
        seq=42,
        time=1_732_857_600,
        measurements=[
            ("temp", "Cel", (215, -1)),
            ("rh", "%RH", 55.5),
            ("pm2.5", "ug/m3", 12),
            ("noise", "dB", 0.1),
            ("door", None, True),
            ("status", None, "ok"),
        ],
    ),
    "no_clock": dict(
        d=scalar("bench-3"),
        device_id="bench-3",
        seq=0,
        time=None,
        measurements=[("temp", "Cel", (-35, -1))],
    ),
    "extremes": dict(
        d=scalar("pole_9"),
        device_id="pole_9",
        seq=2**63 - 1,
        time=4_102_444_800,
        measurements=[
            ("count", None, 2**63 - 1),
            ("offset", "m", -(2**63)),
            ("tilt", "rad", -1.0e300),
            ("level", "m", (-(2**40), -12)),
            ("flag", None, False),
            ("note", None, "Straße Ölweg 5 — süd"),
        ],
    ),
    # short on purpose: every byte of it is mutated in test_wire_rejects
    "small": dict(
        d=scalar("kerb-2"),
        device_id="kerb-2",
        seq=7,
        time=1_732_857_600,
        measurements=[("temp", "Cel", (215, -1)), ("rh", "%RH", 55.5), ("door", None, True)],
    ),
}


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", detail=lambda: "") -> None:
    """A wait for something to happen, not an assertion on how long it took; ``detail`` adds what
    helps when it did not happen (a node's log)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s\n{detail()}".rstrip())
        time.sleep(0.05)


def utc(t: float) -> str:
    """A time as the registry and the gateway list write it (RFC 3339, UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def revoke(path, who: str, since: float, **how):
    """Revokes ``who``'s key from ``since`` on in the registry or gateway list at ``path`` (saved)."""
    from govedge.core.registry import Registry
    from govedge.hub.gateways import Gateways

    keys = (Gateways if Path(path).name == "gateways.json" else Registry).load(path)
    revoked = keys.revoke(who, utc(since), **how)
    keys.save()
    return revoked
