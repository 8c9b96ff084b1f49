"""The signed reading on the wire: decode and verify (docs/FORMAT.md).

This module is the one place that knows the bytes. The gateway, the hub and the
tools all decode and verify through it; the firmware has its own encoder
(firmware/reading.py) and the tests hold the two together.

Every way a message can be wrong ends in :class:`WireError`, whose ``code`` is
a stable word for counting and quarantine and whose message says what a
technician can act on.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Mapping  # a map inside a CBOR tag decodes to a frozen mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable, Union

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from .errors import GovedgeError

# RFC 9052 section 2 / RFC 9053 section 2.1
TAG_COSE_SIGN1 = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_ES256 = -7

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
MAX_DEVICE_ID_CHARS = 64  # device and gateway ids; the longest topic a device publishes to follows from it
DEVICE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_DEVICE_ID_CHARS - 1}}}\Z")
MAX_NAME_CHARS = 64  # names and units; the longest SenML unit in the registry has 11 characters
# control characters (C0 and DEL) in a unit or a string value: no sensor sends them, a terminal or a
# CSV export would act on them, and PostgreSQL cannot store a NUL in text
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
SENML_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*\Z")  # RFC 8428 section 4.5.1

_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

Value = Union[int, float, Decimal, str, bool]


class WireError(GovedgeError, ValueError):
    """A message that is not a valid signed reading.

    ``code`` names the kind of fault (for counters and the quarantine table);
    the text says what exactly is wrong.
    """

    def __init__(self, code: str, reason: str):
        super().__init__(code, reason)


@dataclass(frozen=True)
class Measurement:
    name: str
    unit: str | None
    value: Value


@dataclass(frozen=True)
class Reading:
    """A decoded signed reading. ``time`` is None when the node's clock was not set."""

    device_id: str
    seq: int
    time: int | float | None
    measurements: tuple[Measurement, ...]
    message: bytes
    protected: bytes
    payload: bytes
    signature: bytes

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
                                     self.message, self.protected, self.payload, self.signature)

    def value(self, name: str) -> Value:
        for m in self.measurements:
            if m.name == name:
                return m.value
        raise KeyError(name)


def _reading_from_tuple(device_id, seq, time, measurements, message, protected, payload, signature) -> Reading:
    return Reading(device_id, seq, time, tuple(Measurement(*m) for m in measurements),
                   message, protected, payload, signature)


KeyLookup = Callable[[str], Iterable[ec.EllipticCurvePublicKey]]


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    # RFC 9052 section 4.4: Sig_structure for COSE_Sign1
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


class _OnlyTags(Mapping):
    """cbor2's semantic decoders for every tag but the allowed ones: a refusal.

    cbor2 looks a tag up here before it decodes the tag's content; a tag allowed
    is missing from this mapping and gets cbor2's own decoder. So shared values
    (tags 28/29, which can make a value contain itself), bignums, dates, regexes
    and every tag nobody has defined yet never become Python objects."""

    def __init__(self, allowed: frozenset):
        self.allowed = allowed

    def __getitem__(self, tag):
        if tag in self.allowed:
            raise KeyError(tag)
        return _refuse_tag

    def __contains__(self, tag) -> bool:
        return tag not in self.allowed

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


class _RefusedTag(ValueError):
    pass


def _refuse_tag(decoder, *args):
    raise _RefusedTag("this format does not use it")


# RFC 8949 section 3.4 and the IANA CBOR tags registry: the ones an attacker reaches for first
_TAG_NAMES = {0: "date string", 1: "epoch date", 2: "bignum", 3: "bignum", 4: "decimal fraction",
              5: "bigfloat", 18: "COSE_Sign1", 24: "embedded CBOR item", 28: "shared value",
              29: "shared-value reference", 258: "set"}
_TAGS_NONE = _OnlyTags(frozenset())
_TAGS_ENVELOPE = _OnlyTags(frozenset({TAG_COSE_SIGN1}))
_TAGS_PAYLOAD = _OnlyTags(frozenset({TAG_DECIMAL_FRACTION}))


def _cbor(data: bytes, what: str, tags: Mapping = _TAGS_NONE):
    fp = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(
            fp, allow_indefinite=False, allow_duplicate_keys=False, max_depth=16, semantic_decoders=tags,
        ).decode()
    except Exception as exc:  # cbor2 raises several kinds for bad bytes; all mean the same here
        if isinstance(exc.__cause__, _RefusedTag):
            tag = re.search(r"semantic tag (\d+)", str(exc))
            number = int(tag.group(1)) if tag else None
            name = f"CBOR tag {number}" if tag else "a CBOR tag"
            if number in _TAG_NAMES:
                name = f"a CBOR {_TAG_NAMES[number]} ({name})"
            raise WireError("not_cbor", f"{what} holds {name}, which this format does not use") from None
        raise WireError("not_cbor", f"{what} is not valid CBOR: {_clip(str(exc))}") from None
    if fp.tell() != len(data):
        raise WireError("not_cbor", f"{what} has {len(data) - fp.tell()} bytes after its CBOR item")
    return item


def strict_loads(data: bytes, what: str):
    """A CBOR item of this project's formats other than the reading (batch, epoch record, batch
    head): definite lengths, no duplicate keys, nesting at most 16, and no tags at all."""
    return _cbor(data, what, _TAGS_NONE)


def _is_int(x) -> bool:
    return type(x) is int


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(x) -> str:
    """A value for an error message: short, built without recursion, and never a huge
    number turned into text (whatever a message holds, naming it costs a few bytes)."""
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, int):
        return f"an integer of {x.bit_length()} bits" if x.bit_length() > 64 else str(x)
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, Decimal):
        sign, digits, exponent = x.as_tuple()
        if not isinstance(exponent, int):
            return str(x)  # NaN, Infinity
        if len(digits) > 20 or not -64 <= exponent <= 64:
            return f"a decimal fraction of {len(digits)} digits, exponent {exponent}"
        return f"4([{exponent}, {'-' if sign else ''}{''.join(map(str, digits))}])"
    if isinstance(x, (str, bytes, bytearray)):
        return repr(x[:40]) + ("..." if len(x) > 40 else "")
    if isinstance(x, (list, tuple)):
        return f"an array of {len(x)} items"
    if isinstance(x, Mapping):
        return f"a map of {len(x)} entries"
    if isinstance(x, cbor2.CBORTag):
        return f"CBOR tag {x.tag}"
    return f"a {type(x).__name__}"


MAX_LABELS_SHOWN = 5  # a map may hold hundreds of unknown labels; the error text names a few


def _unexpected(mapping, allowed: frozenset) -> list[str]:
    # labels match by type as well as value: 1.0 and true are not label 1
    if mapping.keys() <= allowed and all(type(k) is int or type(k) is str for k in mapping):
        return []
    extra = sorted(_show(k) for k in mapping if not (type(k) in (int, str) and k in allowed))
    if len(extra) > MAX_LABELS_SHOWN:
        extra[MAX_LABELS_SHOWN:] = [f"and {len(extra) - MAX_LABELS_SHOWN} more"]
    return extra


@dataclass(frozen=True)
class Envelope:
    """A checked COSE_Sign1 of this project's profile: ES256, kid in the protected header."""

    kid: str
    message: bytes
    protected: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)


def decode_envelope(message: bytes, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "message") -> Envelope:
    """Parse the COSE_Sign1 around a reading or a batch, without checking its signature."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise WireError("not_cbor", f"{what} must be bytes, not {type(message).__name__}")
    message = bytes(message)
    if not message:
        raise WireError("not_cbor", f"{what} is empty")
    if len(message) > max_bytes:
        raise WireError("too_large", f"{what} of {len(message)} bytes exceeds {max_bytes}")
    fast = _deterministic_envelope(message)
    if fast is not None:
        protected, payload, signature = fast
        return Envelope(_protected_header(protected), message, protected, payload, signature)
    tag = _leading_tag(message)
    if tag is not None and tag != TAG_COSE_SIGN1:
        raise WireError("not_cose_sign1", f"{what} has CBOR tag {tag}, expected 18 (COSE_Sign1)")
    item = _cbor(message, what, _TAGS_ENVELOPE)
    if not isinstance(item, cbor2.CBORTag):
        raise WireError("not_cose_sign1", f"{what} is not a tagged COSE_Sign1 (CBOR tag 18 missing)")
    if item.tag != TAG_COSE_SIGN1:
        raise WireError("not_cose_sign1", f"{what} has CBOR tag {item.tag}, expected 18 (COSE_Sign1)")
    body = item.value
    if not isinstance(body, (list, tuple)) or len(body) != 4:
        raise WireError("malformed_cose", "COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        raise WireError("malformed_cose", "COSE_Sign1 protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise WireError("malformed_cose", "COSE_Sign1 unprotected header must be a map")
    if unprotected:
        raise WireError("malformed_cose", "unprotected header must be empty: everything is signed")
    if not isinstance(payload, bytes):
        raise WireError("malformed_cose", "COSE_Sign1 payload must be a byte string (not detached)")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise WireError("malformed_cose", "ES256 signature must be a byte string of 64 bytes")
    # the envelope is not signed: only its one deterministic encoding is accepted, so
    # that nobody without the key can give a reading a second set of bytes
    if cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, [protected, {}, payload, signature])) != message:
        raise WireError("malformed_cose", "COSE_Sign1 envelope is not in deterministic CBOR encoding")
    return Envelope(_protected_header(protected), message, protected, payload, signature)


def _leading_tag(message: bytes) -> int | None:
    """The number of the tag the message starts with (RFC 8949 section 3, major type 6), if any."""
    head = message[0]
    if head >> 5 != 6:
        return None
    info = head & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or len(message) < 1 + width:
        return None
    return int.from_bytes(message[1:1 + width], "big")


def _bstr(message: bytes, i: int) -> tuple[bytes, int] | None:
    """The byte string at ``i`` if it has the shortest length encoding, and the index after it."""
    if i >= len(message):
        return None
    head = message[i]
    if 0x40 <= head <= 0x57:
        n, i = head - 0x40, i + 1
    elif head == 0x58 and i + 1 < len(message) and message[i + 1] >= 24:
        n, i = message[i + 1], i + 2
    elif head == 0x59 and i + 2 < len(message) and message[i + 1] << 8 | message[i + 2] >= 256:
        n, i = message[i + 1] << 8 | message[i + 2], i + 3
    else:
        return None
    return (message[i:i + n], i + n) if i + n <= len(message) else None


def _deterministic_envelope(message: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(protected, payload, signature) if the message is exactly the deterministic encoding of
    tag 18 [protected, {}, payload, 64-byte signature]; else None and the general decoder,
    which names what is wrong, decides. Most messages are good, and this reads them in a
    fraction of the time of decoding and encoding again."""
    if message[:2] != b"\xd2\x84":
        return None
    protected = _bstr(message, 2)
    if protected is None or message[protected[1]:protected[1] + 1] != b"\xa0":
        return None
    payload = _bstr(message, protected[1] + 1)
    if payload is None:
        return None
    end = payload[1]
    if message[end:end + 2] != b"\x58\x40" or len(message) != end + 66:
        return None
    return protected[0], payload[0], message[end + 2:]


def decode_unverified(message: bytes) -> Reading:
    """Parse a signed reading without checking its signature: whatever it returns is not yet
    evidence of anything (``verify`` is)."""
    env = decode_envelope(message)
    seq, time, measurements = _senml(env.payload)
    return Reading(env.kid, seq, time, measurements, env.message, env.protected, env.payload, env.signature)


@functools.lru_cache(maxsize=4096)  # a device sends the same protected header every time
def _protected_header(protected: bytes) -> str:
    if not protected:
        raise WireError("bad_header", "protected header is empty: alg and kid are required")
    header = _cbor(protected, "protected header")
    if not isinstance(header, dict):
        raise WireError("bad_header", "protected header is not a map")
    extra = _unexpected(header, _HEADER_LABELS)
    if extra:
        raise WireError("bad_header", f"protected header has unexpected labels {extra}")
    if HEADER_ALG not in header:
        raise WireError("missing_field", "protected header has no alg (label 1)")
    if header[HEADER_ALG] != ALG_ES256 or not _is_int(header[HEADER_ALG]):
        raise WireError("wrong_algorithm", f"alg is {_show(header[HEADER_ALG])}, only ES256 (-7) is accepted")
    if HEADER_KID not in header:
        raise WireError("missing_field", "protected header has no kid (label 4): the device id")
    kid = header[HEADER_KID]
    if not isinstance(kid, bytes):
        raise WireError("bad_header", "kid must be a byte string")
    try:
        device_id = kid.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("bad_header", "kid is not UTF-8 text") from None
    if not DEVICE_ID.match(device_id):
        raise WireError("bad_header", f"kid {_show(device_id)} is not a device id (letters, digits, . _ -; at most 64)")
    return device_id


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


_HEADER_LABELS = frozenset({HEADER_ALG, HEADER_KID})
_RECORD_LABELS = frozenset({SENML_NAME, SENML_UNIT, SENML_VALUE, SENML_STRING_VALUE, SENML_BOOL_VALUE})
_FIRST_RECORD_LABELS = _RECORD_LABELS | {SENML_BASE_TIME, SEQUENCE}


def _senml(payload: bytes):
    pack = _cbor(payload, "payload", _TAGS_PAYLOAD)
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
        raise WireError("bad_sequence", f"sequence number is not an integer: {_show(seq)}")
    if not 0 <= seq <= MAX_SEQUENCE:
        raise WireError("bad_sequence", f"sequence number {_show(seq)} is outside 0..2**63-1")
    time = first.get(SENML_BASE_TIME)
    if SENML_BASE_TIME in first:
        if not _is_int(time) and not (isinstance(time, float) and math.isfinite(time)):
            raise WireError("bad_time", f"base time (bt) is not a number of seconds: {_show(time)}")
        if time < MIN_ABSOLUTE_TIME:
            raise WireError("bad_time", f"base time {_show(time)} is not an absolute time (seconds since 1970)")
        if time >= MAX_ABSOLUTE_TIME:
            raise WireError("bad_time", f"base time {_show(time)} is after 2106-02-07 (2**32 s): a broken clock")
    measurements = []
    names = set()
    for i, rec in enumerate(pack, 1):
        if not isinstance(rec, dict):
            raise WireError("not_senml", f"SenML record {i} is not a map")
        extra = _unexpected(rec, _FIRST_RECORD_LABELS if i == 1 else _RECORD_LABELS)
        if extra:
            raise WireError("bad_record", f"SenML record {i} has unexpected fields {extra}")
        name = rec.get(SENML_NAME)
        if name is None:
            raise WireError("missing_field", f"SenML record {i} has no name (n)")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not SENML_NAME_CHARS.match(name):
            raise WireError("bad_record", f"SenML record {i} has an invalid name {_show(name)}")
        if name in names:
            raise WireError("bad_record", f"SenML record {i} repeats the name {_show(name)}")
        names.add(name)
        unit = rec.get(SENML_UNIT)
        if SENML_UNIT in rec and (not isinstance(unit, str) or not unit or len(unit) > MAX_NAME_CHARS
                                  or CONTROL_CHARS.search(unit)):
            raise WireError("bad_record", f"SenML record {i} ({name}) has an invalid unit {_show(unit)}")
        present = [k for k in (SENML_VALUE, SENML_STRING_VALUE, SENML_BOOL_VALUE) if k in rec]
        if len(present) != 1:
            raise WireError("missing_field" if not present else "bad_record",
                            f"SenML record {i} ({name}) must have exactly one value (v, vs or vb)")
        value = rec[present[0]]
        if present[0] == SENML_VALUE:
            fault = _number_fault(value)
            if fault:
                raise WireError("bad_record", f"SenML record {i} ({name}) has a value that is {fault}: {_show(value)}")
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


def signature_valid(reading: Reading | Envelope, key: ec.EllipticCurvePublicKey) -> bool:
    r = int.from_bytes(reading.signature[:32], "big")
    s = int.from_bytes(reading.signature[32:], "big")
    if not (0 < r < _P256_N and 0 < s < _P256_N):
        return False
    try:
        key.verify(encode_dss_signature(r, s), reading.to_be_signed(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify(message: bytes, keys: KeyLookup) -> Reading:
    """Decode a signed reading and check its signature against the device's keys.

    ``keys(device_id)`` returns the device's public keys (current and retired);
    an empty result or KeyError means the device is unknown.
    """
    reading = decode_unverified(message)
    try:
        candidates = list(keys(reading.device_id))
    except KeyError:
        candidates = []
    if not candidates:
        raise WireError("unknown_device", f"device {reading.device_id!r} is unknown to the registry")
    if not any(signature_valid(reading, key) for key in candidates):
        raise WireError("bad_signature", f"signature does not verify with the key(s) of device {reading.device_id!r}")
    return reading
