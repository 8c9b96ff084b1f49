"""COSE_Sign1 of this project's profile (RFC 9052 section 4): sign and verify an envelope.

Readings, batches and epoch records are all the same envelope around different
payloads: tag 18, a protected header of alg ES256 and kid (the signer's id),
an empty unprotected header, the payload, and the raw r || s signature. The
node signs readings itself (firmware/reading.py); everything this side signs
goes through ``sign1``, and every envelope is read through ``decode_envelope``
and checked through ``check_signature`` (or ``verify``, which does both).

The CBOR of every signed format of the project is read here too, strictly
(``strict_cbor``): definite lengths, no duplicate keys, bounded nesting, and
only the tags a format uses. Every fault ends in :class:`WireError`.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping  # a map inside a CBOR tag decodes to a frozen mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable, NamedTuple

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .errors import GovedgeError

# RFC 9052 section 2 / RFC 9053 section 2.1
TAG_COSE_SIGN1 = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_ES256 = -7

MAX_DEVICE_ID_CHARS = 64  # device and gateway ids; the longest topic a device publishes to follows from it
DEVICE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_DEVICE_ID_CHARS - 1}}}\Z")

_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

KeyLookup = Callable[[str], Iterable[ec.EllipticCurvePublicKey]]


class WireError(GovedgeError, ValueError):
    """A message that is not a valid signed reading (or batch, or epoch record).

    ``code`` names the kind of fault (for counters and the quarantine table);
    the text says what exactly is wrong.
    """

    def __init__(self, code: str, reason: str):
        super().__init__(code, reason)


# --- strict CBOR (RFC 8949), as every signed format of the project is read ---


class OnlyTags(Mapping):
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
NO_TAGS = OnlyTags(frozenset())
_TAGS_ENVELOPE = OnlyTags(frozenset({TAG_COSE_SIGN1}))


def strict_cbor(data: bytes, what: str, tags: Mapping = NO_TAGS):
    """The one CBOR item ``data`` holds, read strictly; ``tags`` (an OnlyTags) names the tags allowed."""
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
    return strict_cbor(data, what, NO_TAGS)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(x) -> str:
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


def unexpected_labels(mapping, allowed: frozenset) -> list[str]:
    """The labels of ``mapping`` that are not in ``allowed``, shown for an error message."""
    # labels match by type as well as value: 1.0 and true are not label 1
    if mapping.keys() <= allowed and all(type(k) is int or type(k) is str for k in mapping):
        return []
    extra = sorted(show(k) for k in mapping if not (type(k) in (int, str) and k in allowed))
    if len(extra) > MAX_LABELS_SHOWN:
        extra[MAX_LABELS_SHOWN:] = [f"and {len(extra) - MAX_LABELS_SHOWN} more"]
    return extra


# --- the envelope ---


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    # RFC 9052 section 4.4: Sig_structure for COSE_Sign1
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


def protected_header(kid: str) -> bytes:
    # RFC 9052 section 3.1: alg (label 1) and kid (label 4), in this order
    return cbor2.dumps({HEADER_ALG: ALG_ES256, HEADER_KID: kid.encode()})


def sign1(key: ec.EllipticCurvePrivateKey, kid: str, payload: bytes) -> bytes:
    """The tagged COSE_Sign1 of ``payload``, signed with ES256 by ``key`` under ``kid``."""
    protected = protected_header(kid)
    # RFC 9053 section 2.1: the signature is r || s, each 32 bytes big-endian, not DER
    r, s = decode_dss_signature(key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    # RFC 9052 section 4.2: [protected, unprotected, payload, signature], tag 18
    return cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, [protected, {}, payload, signature]))


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


def decode_envelope(message: bytes, max_bytes: int, what: str = "message") -> Envelope:
    """Parse the COSE_Sign1 around a reading, a batch or an epoch record, without checking its signature."""
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
    item = strict_cbor(message, what, _TAGS_ENVELOPE)
    if not isinstance(item, cbor2.CBORTag):
        raise WireError("not_cose_sign1", f"{what} is not a tagged COSE_Sign1 (CBOR tag 18 missing)")
    if item.tag != TAG_COSE_SIGN1:
        raise WireError("not_cose_sign1", f"{what} has CBOR tag {item.tag}, expected 18 (COSE_Sign1)")
    # RFC 9052 section 4.2: the COSE_Sign1 array
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


_HEADER_LABELS = frozenset({HEADER_ALG, HEADER_KID})


@functools.lru_cache(maxsize=4096)  # a signer sends the same protected header every time
def _protected_header(protected: bytes) -> str:
    # RFC 9052 section 3.1, this profile: exactly alg ES256 and a kid that is a device or gateway id
    if not protected:
        raise WireError("bad_header", "protected header is empty: alg and kid are required")
    header = strict_cbor(protected, "protected header")
    if not isinstance(header, dict):
        raise WireError("bad_header", "protected header is not a map")
    extra = unexpected_labels(header, _HEADER_LABELS)
    if extra:
        raise WireError("bad_header", f"protected header has unexpected labels {extra}")
    if HEADER_ALG not in header:
        raise WireError("missing_field", "protected header has no alg (label 1)")
    if header[HEADER_ALG] != ALG_ES256 or type(header[HEADER_ALG]) is not int:
        raise WireError("wrong_algorithm", f"alg is {show(header[HEADER_ALG])}, only ES256 (-7) is accepted")
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
        raise WireError("bad_header", f"kid {show(device_id)} is not a device id (letters, digits, . _ -; at most 64)")
    return device_id


def signature_valid(signed, key: ec.EllipticCurvePublicKey) -> bool:
    """Whether ``signed`` (an Envelope, or a decoded reading) carries an ES256 signature by ``key``."""
    # RFC 9053 section 2.1: r || s; both in 1 .. n-1 (cryptography would refuse them in DER anyway)
    r = int.from_bytes(signed.signature[:32], "big")
    s = int.from_bytes(signed.signature[32:], "big")
    if not (0 < r < _P256_N and 0 < s < _P256_N):
        return False
    try:
        key.verify(encode_dss_signature(r, s), signed.to_be_signed(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


class Signer(NamedTuple):
    """Who signs an envelope, as the two refusals name it; ``{kid!r}`` in a reason stands for the kid."""

    unknown_code: str  # no key for the kid: "unknown_device", "unknown_gateway"
    unknown: str  # its reason
    forged: str  # the reason of a signature that no key of the kid verifies ("bad_signature")


def check_signature(kid: str, signed, keys: KeyLookup, signer: Signer) -> int:
    """Raises WireError unless a key that ``keys(kid)`` gives verifies the signature of ``signed``
    (already decoded); returns that key's position in what ``keys(kid)`` gave (0: the first, which a
    registry gives as the active key). An empty result or KeyError means the signer is unknown."""
    try:
        candidates = list(keys(kid))
    except KeyError:
        candidates = []
    if not candidates:
        raise WireError(signer.unknown_code, signer.unknown.format(kid=kid))
    for i, key in enumerate(candidates):
        if signature_valid(signed, key):
            return i
    raise WireError("bad_signature", signer.forged.format(kid=kid))


def verify(data: bytes, keys: KeyLookup, signer: Signer, max_bytes: int, what: str) -> Envelope:
    """The envelope of ``data``, decoded strictly and its signature checked with the signer's keys."""
    envelope = decode_envelope(data, max_bytes=max_bytes, what=what)
    check_signature(envelope.kid, envelope, keys, signer)
    return envelope
