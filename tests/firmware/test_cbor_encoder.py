"""The firmware's CBOR encoder writes what cbor2 writes and reads back.

Fixed cases and a seeded random corpus run in one MicroPython process each
from the .mpy firmware; hypothesis drives firmware/cbor.py under CPython.
"""

from __future__ import annotations

import math
import random
import struct
import sys
from collections.abc import Mapping

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import MPY_PRELUDE, firmware, hex_lines, mpy_literal

FLT_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


def run_encoder(micropython, values) -> list[bytes]:
    """cbor.encode of each value, under MicroPython; cbor2.CBORTag stands for cbor.Tag."""
    # the values go on stdin: a command line is limited to 128 KiB
    script = MPY_PRELUDE + "import cbor\nT = cbor.Tag\nfor v in eval(sys.stdin.read()):\n    out(cbor.encode(v))\n"
    encoded = hex_lines(micropython(script, stdin=mpy_literal(list(values)).encode()))
    assert len(encoded) == len(values)
    return encoded


def plain(x):
    """A hashable, type-exact view of a decoded or source value.

    Distinguishes 1, 1.0 and True, and -0.0 from 0.0; checks on the way that every
    map's keys come in the bytewise order of their encodings (RFC 8949 section 4.2.1).
    """
    if x is None or isinstance(x, bool):
        return ("simple", x)
    if isinstance(x, int):
        return ("int", x)
    if isinstance(x, float):
        return ("float", "nan" if math.isnan(x) else x.hex())
    if isinstance(x, str):
        return ("text", x)
    if isinstance(x, (bytes, bytearray)):
        return ("bytes", bytes(x))
    if isinstance(x, (list, tuple)):
        return ("array", tuple(plain(v) for v in x))
    if isinstance(x, Mapping):
        return ("map", frozenset((plain(k), plain(v)) for k, v in x.items()))
    if isinstance(x, cbor2.CBORTag):
        return ("tag", x.tag, plain(x.value))
    raise TypeError(type(x))


def assert_keys_in_encoded_order(x):
    """Every map in the decoded value lists its keys sorted by their cbor2 encodings."""
    if isinstance(x, Mapping):
        keys = [cbor2.dumps(k) for k in x]
        assert keys == sorted(keys), [k.hex() for k in keys]
        for v in x.values():
            assert_keys_in_encoded_order(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            assert_keys_in_encoded_order(v)
    elif isinstance(x, cbor2.CBORTag):
        assert_keys_in_encoded_order(x.value)


INTEGERS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
            -1, -24, -25, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -(2**64)]

TEXT = ["", "a", "seq", "ü", "Straße", "Grüße aus Köln", "日本語", "🙂 emoji", "x" * 23, "x" * 24,
        "é" * 200, "y" * 70000]

BYTES = [b"", b"\x00", b"\xff" * 23, bytes(range(24)), bytes(range(256)), b"\x01" * 65536]

# tags cbor2 leaves uninterpreted, so they decode back to CBORTag
ARRAYS_AND_TAGS = [
    [],
    [1, [2, [3, [4, []]]]],
    list(range(24)),
    list(range(300)),
    ["a", b"b", -1, True, False, None, [], 2**64 - 1],
    [True, False, None],
    cbor2.CBORTag(6, 0),
    cbor2.CBORTag(18, [b"\xa0", {}, b"", b"\x00" * 64]),
    cbor2.CBORTag(24, b"\x01"),
    cbor2.CBORTag(255, [1, "x"]),
    cbor2.CBORTag(256 * 256, "v"),
    cbor2.CBORTag(2**32, [cbor2.CBORTag(40, [])]),
    cbor2.CBORTag(2**64 - 1, None),
]

MAPS = [
    {},
    # SenML first-record labels: ints sort before text, positives before negatives
    {"seq": 1, 0: "temp", -3: 1_732_857_600, 1: "Cel", 2: 5},
    # length-first ("canonical" of RFC 7049) and bytewise order differ on these
    {24: "b", -1: "a", 23: "c", "aa": 1, "b": 2, b"z": 3, 100000: 4, -100000: 5, 256: 6},
    {"outer": {"z": 1, "a": [{"k": 2, 3: 4}]}, 1: {2: {3: {}}}},
    {b"\x00": 1, b"": 2, "": 3, 0: 4, -1: 5},
]

# (value, the head byte RFC 8949 section 4.2.1 and the firmware call for)
FLOATS = [
    (0.0, 0xFA), (-0.0, 0xFA), (1.5, 0xFA), (55.5, 0xFA), (-2.25, 0xFA),
    (16777216.0, 0xFA), (16777217.0, 0xFB), (0.1, 0xFB), (1 / 3, 0xFB),
    (FLT_MAX, 0xFA), (2.0**-149, 0xFA), (2.0**-126, 0xFA), (5e-324, 0xFB),
    (1e39, 0xFB), (-1e39, 0xFB), (1e300, 0xFB), (sys.float_info.max, 0xFB),
    (math.inf, 0xFA), (-math.inf, 0xFA),
]


@pytest.mark.parametrize("values", [INTEGERS, TEXT, BYTES, ARRAYS_AND_TAGS], ids=["int", "text", "bytes", "array-tag"])
def test_micropython_encoding_is_byte_equal_to_cbor2(micropython, values):
    # cbor2 also writes the shortest head for each of these, so bytes must agree
    encoded = run_encoder(micropython, values)
    for value, got in zip(values, encoded):
        assert got == cbor2.dumps(value), repr(value)[:80]


def test_micropython_maps_sort_keys_by_encoding_and_decode_equal(micropython):
    encoded = run_encoder(micropython, MAPS)
    for value, got in zip(MAPS, encoded):
        decoded = cbor2.loads(got)
        assert plain(decoded) == plain(value)
        assert_keys_in_encoded_order(decoded)


def test_micropython_senml_record_has_rfc8949_deterministic_bytes(micropython):
    # keys 0, 2, -3, "seq": heads 00, 02, 22, 63 in bytewise order
    (got,) = run_encoder(micropython, [{"seq": 7, -3: 300000000, 2: 1, 0: "t"}])
    assert got.hex() == "a4" "00" "6174" "02" "01" "22" "1a11e1a300" "63736571" "07"


def test_micropython_floats_round_trip_in_the_shortest_exact_width(micropython):
    values = [v for v, _ in FLOATS] + [math.nan]
    encoded = run_encoder(micropython, values)
    for (value, head), got in zip(FLOATS, encoded):
        assert got[0] == head, (value, got.hex())
        assert len(got) == (5 if head == 0xFA else 9)
        assert plain(cbor2.loads(got)) == plain(value)
    assert math.isnan(cbor2.loads(encoded[-1]))


def test_micropython_refuses_what_cbor_cannot_hold(micropython):
    script = (
        "import cbor\n"
        "for v in (2**64, -(2**64) - 1, cbor.Tag(2**64, 0), object(), {1, 2}):\n"
        "    try:\n"
        "        cbor.encode(v)\n"
        "        print('encoded')\n"
        "    except (ValueError, TypeError) as e:\n"
        "        print(type(e).__name__)\n"
    )
    assert micropython(script).split() == ["ValueError", "ValueError", "ValueError", "TypeError", "TypeError"]


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -(2**64) + 1]) + rng.choice([0, 0, -1])
    if kind == 1:
        return rng.randint(-(2**64), 2**64 - 1) >> rng.randrange(64) if rng.random() < 0.5 else rng.randint(-300, 300)
    if kind == 2:
        return "".join(rng.choice("aZ09 _-äß€日🙂") for _ in range(rng.randrange(30)))
    if kind == 3:
        return rng.randbytes(rng.randrange(40))
    if kind == 4:
        return struct.unpack(">d", rng.randbytes(8))[0] if rng.random() < 0.5 else rng.choice([0.5, -1.25, 0.1, 1e-7])
    if kind == 5:
        return rng.choice([True, False, None])
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind == 8:
        # byte keys start with 0xff so they never equal a text key (MicroPython warns on that)
        keys = [
            rng.choice([rng.randint(-1000, 70000), "k%d" % rng.randrange(50), b"\xff" + rng.randbytes(1)])
            for _ in range(rng.randrange(6))
        ]
        return {k: _random_value(rng, depth + 1) for k in keys}
    return cbor2.CBORTag(rng.choice([6, 18, 24, 40, 1000, 2**32]), _random_value(rng, depth + 1))


def test_micropython_random_values_decode_with_cbor2_to_the_same_value(micropython):
    rng = random.Random(8949)
    values = [_random_value(rng) for _ in range(400)]
    encoded = run_encoder(micropython, values)
    for value, got in zip(values, encoded):
        decoded = cbor2.loads(got)
        assert plain(decoded) == plain(value), repr(value)[:120]
        assert_keys_in_encoded_order(decoded)


# --- hypothesis under CPython ---------------------------------------------------------

# values beyond binary32's range are left to test_float_beyond_binary32_range_* below
floats = st.floats(min_value=-FLT_MAX, max_value=FLT_MAX) | st.sampled_from([math.inf, -math.inf])
leaves = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text()
    | st.binary()
    | floats
    | st.sampled_from([True, False, None])
)
keys = st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(keys, inner, max_size=6)
    | st.builds(cbor2.CBORTag, st.sampled_from([6, 18, 24, 40, 1000, 2**32, 2**64 - 1]), inner),
    max_leaves=25,
)


def to_firmware(value, cbor):
    """The same value with cbor2.CBORTag replaced by the firmware's Tag."""
    if isinstance(value, cbor2.CBORTag):
        return cbor.Tag(value.tag, to_firmware(value.value, cbor))
    if isinstance(value, list):
        return [to_firmware(v, cbor) for v in value]
    if isinstance(value, dict):
        return {k: to_firmware(v, cbor) for k, v in value.items()}
    return value


@settings(max_examples=400)
@given(values)
def test_cpython_encoding_decodes_with_cbor2_to_the_same_value(value):
    cbor = firmware("cbor")
    decoded = cbor2.loads(cbor.encode(to_firmware(value, cbor)))
    assert plain(decoded) == plain(value)
    assert_keys_in_encoded_order(decoded)


@settings(max_examples=300)
@given(st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.text() | st.binary())
def test_cpython_scalars_are_byte_equal_to_cbor2(value):
    assert firmware("cbor").encode(value) == cbor2.dumps(value)


# CPython's struct.pack('>f') overflows beyond the binary32 range; binary64 must take over
@pytest.mark.parametrize("value", [3.5e38, -1e39, 1e300, sys.float_info.max])
def test_float_beyond_binary32_range_encodes_as_binary64_under_cpython(value):
    got = firmware("cbor").encode(value)
    assert got[0] == 0xFB and cbor2.loads(got) == value
