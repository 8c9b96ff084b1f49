"""The signed reading on the wire: decode and verify (docs/FORMAT.md).

This module is the one place that knows the bytes of a reading; the COSE_Sign1
envelope around it, which batches and epoch records share, is govedge.core.cose.
The gateway, the hub and the tools all decode and verify through it; the firmware
has its own encoder (firmware/reading.py) and the tests hold the two together.

Every way a message can be wrong ends in :class:`WireError`, whose ``code`` is
a stable word for counting and quarantine and whose message says what a
technician can act on.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from cryptography.hazmat.primitives.asymmetric import ec

from . import cose
# the envelope's names, where the wire's users have always found them (the envelope is govedge.core.cose)
from .cose import (ALG_ES256, DEVICE_ID, HEADER_ALG, HEADER_KID, MAX_DEVICE_ID_CHARS, TAG_COSE_SIGN1,  # noqa: F401
                   Envelope, KeyLookup, OnlyTags, WireError, _deterministic_envelope, _P256_N, show,
                   sig_structure, signature_valid, strict_cbor, strict_loads, unexpected_labels)

# RFC 8428 section 6, SenML CBOR labels this format uses
SENML_BASE_TIME = -3
SENML_NAME = 0
SENML_UNIT = 1
SENML_VALUE = 2
SENML_STRING_VALUE = 3
SENML_BOOL_VALUE = 4
SEQUENCE = "seq"  # extension field, first record only

MAX_MESSAGE_BYTES = 2048
MAX_RECORDS = 32
# a signed 64-bit integer: what SQLite and PostgreSQL store, in the gateway and the hub
MAX_SEQUENCE = 2**63 - 1
MIN_INTEGER, MAX_INTEGER = -2**63, 2**63 - 1  # integer values: the same 64-bit range
# SenML: times below 2**28 are relative to "now"; a reading's time must be absolute
MIN_ABSOLUTE_TIME = 2**28
# 2106-02-07T06:28:16Z: a node clock past it is broken, not early (and fits any 64-bit column)
MAX_ABSOLUTE_TIME = 2**32
# decimal fractions (RFC 8949 section 3.4.4): 10**-18 .. 10**18 spans every sensor's range and
# resolution with room to spare; a mantissa up to 2**53 keeps the value exact as a double
MAX_DECIMAL_EXPONENT = 18
MAX_DECIMAL_MANTISSA = 2**53
TAG_DECIMAL_FRACTION = 4
MAX_NAME_CHARS = 64  # names and units; the longest SenML unit in the registry has 11 characters
# control characters (C0 and DEL) in a unit or a string value: no sensor sends them, a terminal or a
# CSV export would act on them, and PostgreSQL cannot store a NUL in text
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
SENML_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*\Z")  # RFC 8428 section 4.5.1

Value = Union[int, float, Decimal, str, bool]


@dataclass(frozen=True)
class Measurement:
    name: str
    unit: str | None
    value: Value


@dataclass(frozen=True)
class Reading:
    """A decoded signed reading. ``time`` is None when the node's clock was not set. ``key``: which of
    the keys the verifier was given verified it (0 the first: a registry gives the active key first;
    govedge.core.registry's ``key_rule`` says what the others may sign)."""

    device_id: str
    seq: int
    time: int | float | None
    measurements: tuple[Measurement, ...]
    message: bytes
    protected: bytes
    payload: bytes
    signature: bytes
    key: int = 0

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole signed message, the leaf the batches are built on."""
        return hashlib.sha256(self.message).digest()

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)

    def __reduce__(self):
        # plain tuples cross a process boundary four times faster than the dataclasses
        # (the gateway's verification workers send every reading back this way)
        return _reading_from_tuple, (self.device_id, self.seq, self.time,
                                     tuple((m.name, m.unit, m.value) for m in self.measurements),
                                     self.message, self.protected, self.payload, self.signature, self.key)

    def value(self, name: str) -> Value:
        for m in self.measurements:
            if m.name == name:
                return m.value
        raise KeyError(name)


def _reading_from_tuple(device_id, seq, time, measurements, message, protected, payload, signature,
                       key=0) -> Reading:
    return Reading(device_id, seq, time, tuple(Measurement(*m) for m in measurements),
                   message, protected, payload, signature, key)


_TAGS_PAYLOAD = OnlyTags(frozenset({TAG_DECIMAL_FRACTION}))  # a value may be a decimal fraction, nothing else


def _is_int(x) -> bool:
    return type(x) is int


def decode_unverified(message: bytes) -> Reading:
    """Parse a signed reading without checking its signature: whatever it returns is not yet
    evidence of anything (``verify`` is)."""
    env = cose.decode_envelope(message, MAX_MESSAGE_BYTES)
    seq, time, measurements = _senml(env.payload)
    return Reading(env.kid, seq, time, measurements, env.message, env.protected, env.payload, env.signature)


def _number_fault(x) -> str | None:
    """Why x is not a value this format carries, or None: the bounds are in docs/FORMAT.md."""
    if _is_int(x):
        return None if MIN_INTEGER <= x <= MAX_INTEGER else "an integer outside the 64-bit range"
    if isinstance(x, float):
        return None if math.isfinite(x) else "not a finite number"
    if isinstance(x, Decimal):
        sign, digits, exponent = x.as_tuple()
        if not isinstance(exponent, int):
            return "not a finite number"
        if not -MAX_DECIMAL_EXPONENT <= exponent <= MAX_DECIMAL_EXPONENT:
            return f"a decimal fraction with an exponent outside -{MAX_DECIMAL_EXPONENT}..{MAX_DECIMAL_EXPONENT}"
        if len(digits) >= 16 and int("".join(map(str, digits))) > MAX_DECIMAL_MANTISSA:
            return "a decimal fraction with a mantissa outside -2**53..2**53"
        return None
    return "not a finite number"


_RECORD_LABELS = frozenset({SENML_NAME, SENML_UNIT, SENML_VALUE, SENML_STRING_VALUE, SENML_BOOL_VALUE})
_FIRST_RECORD_LABELS = _RECORD_LABELS | {SENML_BASE_TIME, SEQUENCE}


def _senml(payload: bytes):
    pack = strict_cbor(payload, "payload", _TAGS_PAYLOAD)
    if not isinstance(pack, (list, tuple)):
        raise WireError("not_senml", "payload is not a SenML pack (a CBOR array of records)")
    if not pack:
        raise WireError("not_senml", "SenML pack has no records")
    if len(pack) > MAX_RECORDS:
        raise WireError("not_senml", f"SenML pack has {len(pack)} records, at most {MAX_RECORDS} allowed")
    first = pack[0]
    if not isinstance(first, dict):
        raise WireError("not_senml", "SenML record 1 is not a map")
    if SEQUENCE not in first:
        raise WireError("missing_field", "first SenML record has no sequence number ('seq')")
    seq = first[SEQUENCE]
    if not _is_int(seq):
        raise WireError("bad_sequence", f"sequence number is not an integer: {show(seq)}")
    if not 0 <= seq <= MAX_SEQUENCE:
        raise WireError("bad_sequence", f"sequence number {show(seq)} is outside 0..2**63-1")
    time = first.get(SENML_BASE_TIME)
    if SENML_BASE_TIME in first:
        if not _is_int(time) and not (isinstance(time, float) and math.isfinite(time)):
            raise WireError("bad_time", f"base time (bt) is not a number of seconds: {show(time)}")
        if time < MIN_ABSOLUTE_TIME:
            raise WireError("bad_time", f"base time {show(time)} is not an absolute time (seconds since 1970)")
        if time >= MAX_ABSOLUTE_TIME:
            raise WireError("bad_time", f"base time {show(time)} is after 2106-02-07 (2**32 s): a broken clock")
    measurements = []
    names = set()
    for i, rec in enumerate(pack, 1):
        if not isinstance(rec, dict):
            raise WireError("not_senml", f"SenML record {i} is not a map")
        extra = unexpected_labels(rec, _FIRST_RECORD_LABELS if i == 1 else _RECORD_LABELS)
        if extra:
            raise WireError("bad_record", f"SenML record {i} has unexpected fields {extra}")
        name = rec.get(SENML_NAME)
        if name is None:
            raise WireError("missing_field", f"SenML record {i} has no name (n)")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not SENML_NAME_CHARS.match(name):
            raise WireError("bad_record", f"SenML record {i} has an invalid name {show(name)}")
        if name in names:
            raise WireError("bad_record", f"SenML record {i} repeats the name {show(name)}")
        names.add(name)
        unit = rec.get(SENML_UNIT)
        if SENML_UNIT in rec and (not isinstance(unit, str) or not unit or len(unit) > MAX_NAME_CHARS
                                  or CONTROL_CHARS.search(unit)):
            raise WireError("bad_record", f"SenML record {i} ({name}) has an invalid unit {show(unit)}")
        present = [k for k in (SENML_VALUE, SENML_STRING_VALUE, SENML_BOOL_VALUE) if k in rec]
        if len(present) != 1:
            raise WireError("missing_field" if not present else "bad_record",
                            f"SenML record {i} ({name}) must have exactly one value (v, vs or vb)")
        value = rec[present[0]]
        if present[0] == SENML_VALUE:
            fault = _number_fault(value)
            if fault:
                raise WireError("bad_record", f"SenML record {i} ({name}) has a value that is {fault}: {show(value)}")
        if present[0] == SENML_STRING_VALUE and not isinstance(value, str):
            raise WireError("bad_record", f"SenML record {i} ({name}) has a string value that is not text")
        if present[0] == SENML_STRING_VALUE and CONTROL_CHARS.search(value):
            raise WireError("bad_record", f"SenML record {i} ({name}) has a string value with a control character")
        if present[0] == SENML_BOOL_VALUE and not isinstance(value, bool):
            raise WireError("bad_record", f"SenML record {i} ({name}) has a boolean value that is not true/false")
        measurements.append(Measurement(name, unit, value))
    return seq, time, tuple(measurements)


def public_key_from_sec1(data: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from its SEC 1 encoding (65 bytes uncompressed, or 33 compressed)."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(data))
    except ValueError as exc:
        raise WireError("bad_key", f"not a P-256 public key: {exc}") from None


def decode_envelope(message: bytes, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "message") -> Envelope:
    """Parse the COSE_Sign1 around a reading (or, given max_bytes and what, a batch), without checking its signature."""
    return cose.decode_envelope(message, max_bytes, what)


# the refusals of wire.verify, in the words of docs/FORMAT.md
DEVICE_SIGNER = cose.Signer("unknown_device", "device {kid!r} is unknown to the registry",
                            "signature does not verify with the key(s) of device {kid!r}")


def verify(message: bytes, keys: KeyLookup) -> Reading:
    """Decode a signed reading and check its signature against the device's keys.

    ``keys(device_id)`` returns the device's public keys (current and retired);
    an empty result or KeyError means the device is unknown. The reading's ``key`` is the
    position of the key that verified it in that list.
    """
    reading = decode_unverified(message)
    key = cose.check_signature(reading.device_id, reading, keys, DEVICE_SIGNER)
    if key:  # frozen; set once, before anyone else has the reading
        object.__setattr__(reading, "key", key)
    return reading
