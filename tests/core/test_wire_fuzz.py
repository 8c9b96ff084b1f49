"""Whatever bytes arrive, govedge.core.wire answers with a Reading or a WireError, never a crash.

The examples are derandomized (conftest's hypothesis profile), so a run is the
same on every machine and a failure reproduces.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import cbor2
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from govedge.core import wire
from support.fuzzgen import apply_edits, byte_edits
from support import cose_sign1, lookup, private_key, public_key, scalar

KEY = private_key(scalar("fuzz-device"))
ANY_DEVICE_KEYS = lookup(KEY.public_key())
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def assert_reading_invariants(reading: wire.Reading):
    """What every accepted message must satisfy (docs/FORMAT.md), checked on the result."""
    assert DEVICE_ID.match(reading.device_id)
    assert type(reading.seq) is int and 0 <= reading.seq <= 2**63 - 1
    assert reading.time is None or (
        type(reading.time) in (int, float) and math.isfinite(reading.time) and 2**28 <= reading.time < 2**32
    )
    assert 1 <= len(reading.measurements) <= 32
    names = [m.name for m in reading.measurements]
    assert len(set(names)) == len(names)
    for m in reading.measurements:
        assert isinstance(m.name, str) and m.name
        assert m.unit is None or (isinstance(m.unit, str) and m.unit)
        if isinstance(m.value, bool) or isinstance(m.value, str):
            continue
        assert type(m.value) in (int, float, Decimal), m
        assert m.value.is_finite() if isinstance(m.value, Decimal) else math.isfinite(m.value)
        if isinstance(m.value, Decimal):  # what the hub can write out in a few bytes
            assert -18 <= m.value.as_tuple().exponent <= 18 and abs(m.value.scaleb(-m.value.as_tuple().exponent)) <= 2**53
        elif isinstance(m.value, int):
            assert -(2**63) <= m.value <= 2**63 - 1
    assert len(reading.signature) == 64
    assert len(reading.message) <= 2048


# whatever the message holds, the reason of its refusal is one line of a few hundred characters
MAX_REASON_CHARS = 400


def assert_error_invariants(exc: wire.WireError):
    assert exc.code and exc.reason
    assert len(exc.reason) <= MAX_REASON_CHARS and "\n" not in exc.reason, exc.reason[:200]


def decode_outcome(message: bytes):
    """decode_unverified() either returns a Reading that keeps the invariants, or raises WireError."""
    try:
        reading = wire.decode_unverified(message)
    except wire.WireError as exc:
        assert_error_invariants(exc)
        return exc
    assert_reading_invariants(reading)
    return reading


def verify_outcome(message: bytes, keys=ANY_DEVICE_KEYS):
    try:
        reading = wire.verify(message, keys)
    except wire.WireError as exc:
        assert_error_invariants(exc)
        event(exc.code)  # shown by --hypothesis-show-statistics: which checks were reached
        return exc
    event("verified")
    assert_reading_invariants(reading)
    return reading


# --- arbitrary bytes ---------------------------------------------------------------------


@settings(max_examples=1500)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_only_wire_errors(data):
    decode_outcome(data)
    assert isinstance(verify_outcome(data), wire.WireError)


@settings(max_examples=1500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_cose_sign1_head_give_only_wire_errors(tail):
    # tag 18 and an array of 4 get the bytes past the first checks
    data = b"\xd2\x84" + tail
    decode_outcome(data)
    assert isinstance(verify_outcome(data), wire.WireError)


# --- mutated firmware messages -------------------------------------------------------------

@settings(max_examples=1500)
@given(name=st.sampled_from(["small", "street", "no_clock", "extremes"]), ops=byte_edits)
def test_mutated_firmware_messages_give_a_wire_error_or_the_signed_reading(firmware_readings, name, ops):
    fr = firmware_readings[name]
    mutated = apply_edits(fr.message, ops)
    decode_outcome(mutated)
    outcome = verify_outcome(mutated, lookup(public_key(fr.d)))
    if isinstance(outcome, wire.Reading):
        # an accepted change may only re-encode the envelope: the signed bytes are the original ones
        original = wire.decode_unverified(fr.message)
        assert (outcome.protected, outcome.payload) == (original.protected, original.payload)
        assert outcome.signature == original.signature


def test_an_error_names_a_few_of_hundreds_of_unknown_labels():
    # found by tests/gateway/test_fuzz_pipeline.py: the reason listed every one, 3905 characters in a quarantine row
    record = {0: "temp", 2: 1, "seq": 1, **{label: 0 for label in range(-500, -4)}}  # 496 unknown
    header = {1: -7, 4: b"sensor-1", **{label: 0 for label in range(10, 400)}}  # 390 unknown
    for message, reason in (
            (cose_sign1(KEY, [record]),
             "SenML record 1 has unexpected fields ['-10', '-100', '-101', '-102', '-103', 'and 491 more']"),
            (cose_sign1(KEY, [{0: "temp", 2: 1, "seq": 1}], protected=header),
             "protected header has unexpected labels ['10', '100', '101', '102', '103', 'and 385 more']")):
        with pytest.raises(wire.WireError) as exc:
            wire.verify(message, ANY_DEVICE_KEYS)
        assert exc.value.reason == reason


# --- random CBOR structures ------------------------------------------------------------------

# tags cbor2 gives meaning to are included on purpose: their decoders must fail cleanly too
TAGS = [0, 1, 2, 3, 4, 5, 18, 24, 25, 28, 29, 30, 98, 256, 258, 55799, 2**64 - 1]

# unbounded integers here stay far below CPython's 4300-digit str() limit; integers past it
# are a known fault, pinned down by test_wire_rejects.test_field_holding_an_integer_too_long_*
cbor_leaves = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from([True, False, None, math.nan, math.inf])
)
cbor_keys = st.integers(-(2**64), 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=5) | st.floats()


def cbor_values(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=5)
        | st.dictionaries(cbor_keys, inner, max_size=5)
        | st.builds(cbor2.CBORTag, st.sampled_from(TAGS), inner),
        max_leaves=20,
    )


random_cbor = cbor_values(cbor_leaves)


@settings(max_examples=800)
@given(random_cbor)
def test_random_cbor_structures_give_only_wire_errors(value):
    data = cbor2.dumps(value)
    decode_outcome(data)
    assert isinstance(verify_outcome(data), wire.WireError)


# pieces from which near-valid readings are built, so the later checks get reached
VALID_PROTECTED = cbor2.dumps({1: -7, 4: b"sensor-1"})
header_labels = st.sampled_from([1, 4, 3, -1, 1.0, True, "alg", 4.5]) | st.integers(-30, 30)
header_values = st.sampled_from([-7, -35, -7.0, b"sensor-1", b"", b"a b", "sensor-1", b"\xff", b"k" * 65]) | cbor_leaves
# one_of draws its branches about evenly, so the branch to favour is listed more than once
protected = st.one_of(
    st.just(VALID_PROTECTED),
    st.just(VALID_PROTECTED),
    st.just(VALID_PROTECTED),
    st.dictionaries(header_labels, header_values, max_size=4).map(cbor2.dumps),
    st.builds(lambda kid: cbor2.dumps({1: -7, 4: kid}), st.binary(max_size=70)),
    st.binary(max_size=30),
)
names = st.sampled_from(["temp", "rh", "pm2_5", "a b", "", "-x", "x" * 70, b"temp"]) | cbor_leaves
units = st.sampled_from(["Cel", "%RH", ""]) | cbor_leaves
numbers = (
    st.sampled_from([21.5, 0, -1, 2**64, -(2**64) - 1, math.nan, -math.inf, True, "1", None])
    | st.builds(lambda e, m: cbor2.CBORTag(4, [e, m]), st.integers(-40, 40), st.integers(-(2**70), 2**70))
    | st.builds(cbor2.CBORTag, st.sampled_from([2, 3, 4, 5, 30]), cbor_leaves)
    | cbor_leaves
)
times = st.sampled_from([1_732_857_600, 2**28, 2**28 - 1, 0, -1, 1.7e9, math.inf, math.nan, True, "now"]) | cbor_leaves
seqs = st.sampled_from([0, 1, 2**64 - 1, 2**64, -1, 1.0, "1", True, None]) | st.integers()
optional_fields = {1: units, 3: names, 4: st.booleans() | cbor_leaves, -2: names, 5: numbers}
first_record = st.fixed_dictionaries({0: names, "seq": seqs, 2: numbers}, optional={-3: times, **optional_fields})
record = st.fixed_dictionaries({0: names}, optional={2: numbers, "seq": seqs, -3: times, **optional_fields})
packs = st.builds(lambda first, rest: [first, *rest], first_record, st.lists(record, max_size=3))
payload = st.one_of(
    packs.map(cbor2.dumps),
    packs.map(cbor2.dumps),
    packs.map(cbor2.dumps),
    st.lists(record, max_size=3).map(cbor2.dumps),
    random_cbor.map(cbor2.dumps),
    st.binary(max_size=60),
)
unprotected = st.dictionaries(header_labels, header_values, min_size=1, max_size=2) | cbor_leaves
sig64 = st.binary(min_size=64, max_size=64)
signature = st.one_of(sig64, sig64, sig64, st.binary(max_size=70), cbor_leaves)
no_unprotected = st.just({})


@settings(max_examples=1500)
@given(
    tag=st.sampled_from([18] * 8 + [17, 98]),
    body=st.one_of(
        st.tuples(protected, no_unprotected, payload, signature).map(list),
        st.tuples(protected, no_unprotected, payload, signature).map(list),
        st.tuples(protected | cbor_leaves, no_unprotected | unprotected, payload | cbor_leaves, signature).map(list),
        st.lists(cbor_leaves, max_size=6),
    ),
)
def test_random_cose_sign1_structures_give_only_wire_errors(tag, body):
    data = cbor2.dumps(cbor2.CBORTag(tag, body))
    decode_outcome(data)
    assert isinstance(verify_outcome(data), wire.WireError)


@settings(max_examples=1000)
@given(prot=protected, pay=payload)
def test_random_contents_with_a_valid_signature_give_a_wire_error_or_a_sound_reading(prot, pay):
    # the signature is genuine, so only the contents decide; accepted ones must keep the invariants
    data = cose_sign1(KEY, pay, protected=prot)
    outcome = verify_outcome(data)
    if isinstance(outcome, wire.Reading):
        assert (outcome.protected, outcome.payload) == (prot, pay)


def _general_envelope(message: bytes):
    """The envelope as cbor2 decodes it, checked by encoding it again (the path for faulty messages)."""
    try:
        item = cbor2.loads(message)
    except Exception:
        return None
    if not (isinstance(item, cbor2.CBORTag) and item.tag == 18 and isinstance(item.value, (list, tuple))
            and len(item.value) == 4):
        return None
    protected, unprotected, payload, signature = item.value
    if not (isinstance(protected, bytes) and unprotected == {} and isinstance(payload, bytes)
            and isinstance(signature, bytes) and len(signature) == 64):
        return None
    if cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature])) != message:
        return None
    return protected, payload, signature


@settings(max_examples=1000)
@given(st.binary(max_size=300), st.binary(max_size=600), st.binary(min_size=60, max_size=68),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3), st.integers(-3, 3))
def test_the_fast_envelope_reader_agrees_with_the_general_decoder(protected, payload, signature, edits, cut):
    # the reader of well-formed envelopes may say "not mine" (None), but never read a message
    # differently from cbor2 followed by the determinism check
    message = bytearray(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature])))
    for at, value in edits:
        message[at % len(message)] = value
    if cut > 0:
        message += bytes(cut)
    elif cut < 0:
        del message[cut:]
    message = bytes(message)
    fast = wire._deterministic_envelope(message) if message else None
    general = _general_envelope(message)
    assert fast == general
