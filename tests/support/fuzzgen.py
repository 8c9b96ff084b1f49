"""Hostile inputs for the ingest path, built from valid ones (tests/gateway/test_fuzz_pipeline.py).

A message is parsed into a tree of CBOR items whose heads are spelled out (the
argument and how it is written), so that a mutation can do what no CBOR
library's encoder does: a length that lies, an integer in a longer head than it
needs, a map with a key twice, a tag around anything, an item cut short. The
mutated tree is written out again and, where the attack needs it, signed with a
valid device (or gateway) key, so it gets past the signature check to the code
behind it.

Every choice is drawn through hypothesis, so a failure shrinks to a small input
and the same examples come on every run (conftest's derandomized profile).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, field

import cbor2
from hypothesis import strategies as st

from support import cose_sign1, firmware

# -- CBOR items with their heads spelled out (RFC 8949 section 3) -----------------------

INDEFINITE = 31
_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}
RAW = -1  # not an item: bytes written as they are (garbage, a cut, a stray break)


@dataclass
class Item:
    """One CBOR data item. ``arg``: the head's argument (value, length, tag number, simple
    value); ``info``: how the head is written (None: the shortest form; 24..27: an argument of
    1, 2, 4 or 8 bytes; 31: indefinite length; 28..30: reserved, for hostile heads)."""

    major: int
    arg: int = 0
    info: int | None = None
    data: bytes = b""  # string contents, a float's bits, or the bytes of a RAW item
    items: list = field(default_factory=list)  # array items; map keys and values in turn; a tag's content


def _head(major: int, arg: int, info: int | None) -> bytes:
    arg %= 1 << 64  # a length pushed past what a head holds wraps around, as a careless encoder's would
    if info is None:
        info = arg if arg < 24 else next(i for i, w in _WIDTH.items() if arg < 1 << (8 * w))
    first = bytes([major << 5 | info])
    if info in _WIDTH:
        w = _WIDTH[info]
        return first + (arg % (1 << (8 * w))).to_bytes(w, "big")
    return first


def encode(item: Item) -> bytes:
    out = bytearray()
    _encode(item, out)
    return bytes(out)


def _encode(item: Item, out: bytearray) -> None:
    if item.major == RAW:
        out += item.data
        return
    if item.major == 7 and item.info in (25, 26, 27) and item.data:
        out += bytes([0xE0 | item.info]) + item.data
        return
    if item.info == INDEFINITE:
        out.append(item.major << 5 | INDEFINITE)
        if item.major in (2, 3):  # one definite chunk inside, as a decoder must accept
            out += _head(item.major, len(item.data), None) + item.data
        for child in item.items:
            _encode(child, out)
        out.append(0xFF)
        return
    out += _head(item.major, item.arg, item.info)
    out += item.data
    for child in item.items:
        _encode(child, out)


def parse(data: bytes) -> Item:
    """A well-formed CBOR item (as this project's encoders write them) into a tree, heads kept."""
    item, end = _parse(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the item")
    return item


def _parse(data: bytes, i: int) -> tuple[Item, int]:
    first = data[i]
    major, info = first >> 5, first & 0x1F
    i += 1
    if info < 24:
        arg, written = info, None
    elif info in _WIDTH:
        w = _WIDTH[info]
        arg = int.from_bytes(data[i:i + w], "big")
        i += w
        written = None if _head(major, arg, None)[0] & 0x1F == info else info
    else:
        raise ValueError(f"head {first:#04x} is not one this parser reads")
    if major == 7 and info in (25, 26, 27):
        return Item(7, 0, info, data[i - _WIDTH[info]:i]), i
    if major in (2, 3):
        return Item(major, arg, written, data[i:i + arg]), i + arg
    item = Item(major, arg, written)
    count = {4: arg, 5: 2 * arg, 6: 1}.get(major, 0)
    for _ in range(count):
        child, i = _parse(data, i)
        item.items.append(child)
    return item, i


def of(value) -> Item:
    """The tree of a Python value, as cbor2 encodes it."""
    return parse(cbor2.dumps(value))


def raw(data: bytes) -> Item:
    return Item(RAW, data=data)


def tag(number: int, content: Item) -> Item:
    return Item(6, number, items=[content])


def array(*items: Item) -> Item:
    return Item(4, len(items), items=list(items))


def with_value(mapping: Item, key, value: Item) -> Item:
    """The map with the value of one key replaced."""
    out = shallow(mapping)
    k = next(i for i in range(0, len(out.items), 2) if out.items[i] == of(key))
    out.items[k + 1] = value
    return out


def nodes(item: Item, path: tuple = ()):
    """Every item of the tree with its path (indices into ``items``), the root first."""
    yield path, item
    for i, child in enumerate(item.items):
        yield from nodes(child, path + (i,))


def shallow(item: Item) -> Item:
    """A copy whose own list of items may change; the items themselves are shared, never changed."""
    return dataclasses.replace(item, items=list(item.items))


def replaced(root: Item, path: tuple, new: Item) -> Item:
    """The tree with the item at path replaced; only the items on the path are copied."""
    if not path:
        return new
    top = parent = shallow(root)
    for i in path[:-1]:
        parent.items[i] = shallow(parent.items[i])
        parent = parent.items[i]
    parent.items[path[-1]] = new
    return top


# -- what a mutation puts in -------------------------------------------------------------

# every tag an attacker reaches for: dates, bignums, decimal and big floats, COSE, embedded
# CBOR, shared values and references (28/29), self-describe, sets, and numbers nobody defined
TAG_NUMBERS = [0, 1, 2, 3, 4, 5, 16, 17, 18, 21, 24, 25, 26, 27, 28, 29, 30, 32, 33, 35, 36, 37, 96, 97, 98,
               256, 258, 259, 260, 1001, 55799, 0xFFFF, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
INTEGERS = [0, 1, 7, 23, 24, 255, 256, 65535, 65536, 2**28 - 1, 2**28, 2**31, 2**32 - 1, 2**32, 2**53, 2**53 + 1,
            2**63 - 1, 2**63, 2**64 - 1, -1, -24, -25, -(2**31), -(2**53) - 1, -(2**63), -(2**63) - 1, -(2**64)]
# exponents and mantissas of decimal fractions: the documented bounds and just past them, and the
# ones that made the hub write out billions of digits
EXPONENTS = [0, -1, -2, -18, -19, 18, 19, 308, -400, 10**8, 3_000_000_000, 2**63 - 1, 2**63, 2**64 - 1,
             -(2**63), -(2**64)]
MANTISSAS = [0, 1, -1, 5, 2153, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**64)]
FLOATS = [0.0, -0.0, 1.5, 21.53, 65504.0, 1e-7, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
          -1.7976931348623157e308, 2.0**28, 2.0**32, 2.0**63, 2.0**64, 1.7e9, math.inf, -math.inf, math.nan]
TEXTS = ["", "a", "temp", "seq", "Cel", "x" * 64, "x" * 65, "x" * 1500,
         "temp\u200b",  # a zero-width space: looks like temp
         "t\u0435mp",  # a Cyrillic e: looks like temp
         "\u202etemp",  # right-to-left override
         "e\u0301",  # e and a combining accent (NFD) ...
         "\u00e9",  # ... and the same letter composed (NFC)
         "Cel\x00", "\x00", "\n\r\t", "\ufeffseq", "\uffff", "\U0001f4a8" * 16, "ﬀ", "İ", "a b",
         "'; DROP TABLE readings; --", "%s%s%n", "../../etc/passwd", "\x1b[2J"]
# text strings whose bytes are not UTF-8: a lone surrogate, a stray continuation byte, an overlong "/"
BAD_UTF8 = [b"\xed\xa0\x80", b"\x80", b"\xc0\xaf", b"\xff\xfe", b"temp\xff"]
SIMPLE = [raw(b"\xf7"), raw(b"\xf6"), raw(b"\xf5"), raw(b"\xf4"), raw(b"\xf0"), raw(b"\xf8\x00"), raw(b"\xf8\xff"),
          raw(b"\xf8\x18"), raw(b"\xff"), raw(b"\xfc"), raw(b"\x1c"), raw(b"\x5f\xff"), raw(b"\x3f")]
MAP_KEYS = [1.0, 0.0, -3.0, True, False, None, b"", b"seq", b"\x00", "", "n", "v", "bt", "SEQ", 2**64 - 1, -(2**64),
            -3, 0, 1, 2, 3, 4, 5, 6, -1, -2, -4, -5, 23, 24, 1.5, math.nan]


def float_item(x: float, width: int) -> Item:
    """x as a half (25), single (26) or double (27) float head; widths that cannot hold it go wider."""
    try:
        bits = struct.pack(">" + {25: "e", 26: "f", 27: "d"}[width], x)
    except (OverflowError, struct.error):
        return float_item(x, 27)
    return Item(7, 0, width, bits)


def _ints():
    return st.sampled_from(INTEGERS) | st.integers(-(2**64), 2**64 - 1)


def _widened(item: Item, info: int) -> Item:
    """The same integer, length or tag in a longer head than it needs."""
    item = shallow(item)
    if item.info == INDEFINITE or item.major == RAW or (item.major == 7 and item.data):
        return item
    if item.arg < 1 << (8 * _WIDTH[info]):
        item.info = info
    return item


@st.composite
def leaf(draw) -> Item:
    """A hostile value in place of whatever stood there."""
    kind = draw(st.sampled_from(["int", "float", "text", "bad_utf8", "bytes", "simple", "decimal", "bignum", "tag",
                                 "empty"]))
    if kind == "int":
        return of(draw(_ints()))
    if kind == "float":
        return float_item(draw(st.sampled_from(FLOATS) | st.floats()), draw(st.sampled_from([25, 26, 27])))
    if kind == "text":
        return of(draw(st.sampled_from(TEXTS) | st.text(max_size=70)))
    if kind == "bad_utf8":
        data = draw(st.sampled_from(BAD_UTF8))
        return Item(3, len(data), data=data)
    if kind == "bytes":
        return of(draw(st.binary(max_size=70)))
    if kind == "simple":
        return draw(st.sampled_from(SIMPLE))
    if kind == "decimal":
        return draw(decimal_fraction())
    if kind == "bignum":
        return draw(bignum())
    if kind == "tag":
        return tag(draw(st.sampled_from(TAG_NUMBERS)), of(draw(_ints() | st.text(max_size=8))))
    return of(draw(st.sampled_from([[], {}, b"", ""])))


@st.composite
def decimal_fraction(draw) -> Item:
    """Tag 4 with exponent and mantissa at and past the bounds, or of the wrong shape."""
    e = of(draw(st.sampled_from(EXPONENTS) | st.integers(-40, 40)))
    m = of(draw(st.sampled_from(MANTISSAS) | st.integers(-(2**54), 2**54)))
    shape = draw(st.sampled_from(["pair"] * 6 + ["one", "three", "bignum_mantissa", "float_exponent", "nested",
                                                 "map", "wide"]))
    if shape == "one":
        return tag(4, array(e))
    if shape == "three":
        return tag(4, array(e, m, m))
    if shape == "bignum_mantissa":
        return tag(4, array(e, draw(bignum())))
    if shape == "float_exponent":
        return tag(4, array(float_item(draw(st.sampled_from(FLOATS)), 27), m))
    if shape == "nested":
        return tag(4, array(e, tag(4, array(e, m))))
    if shape == "map":
        return tag(4, of({0: 1, 1: 2}))
    if shape == "wide":
        return tag(4, array(_widened(e, 27), _widened(m, 27)))
    return tag(4, array(e, m))


@st.composite
def bignum(draw) -> Item:
    digits = draw(st.sampled_from([b"", b"\x00", b"\x01", b"\x00" * 9 + b"\x05", b"\x01" + bytes(8), b"\xff" * 9,
                                   b"\x7f" + b"\xff" * 7, b"\xff" * 200]) | st.binary(max_size=40))
    return tag(draw(st.sampled_from([2, 3])), Item(2, len(digits), data=digits))


def shared_self_reference(draw, target: Item) -> Item:
    """Tags 28/29: a value that contains itself, or a reference to nothing."""
    shape = draw(st.sampled_from(["array", "map", "around", "dangling", "deep"]))
    ref = tag(29, of(draw(st.sampled_from([0, 1, 2**32, 2**64 - 1]))))
    if shape == "array":
        return tag(28, array(ref))
    if shape == "map":
        return tag(28, Item(5, 1, items=[of(0), ref]))
    if shape == "around":
        inner = shallow(target)
        if inner.major == 4:
            inner.items.append(ref)
            inner.arg += 1
        elif inner.major == 5:
            inner.items += [of("r"), ref]
            inner.arg += 1
        return tag(28, inner)
    if shape == "dangling":
        return ref
    return tag(28, array(tag(28, array(tag(29, of(0)), tag(29, of(1))))))


# -- mutations of a tree ---------------------------------------------------------------------

# the ones that keep the CBOR well formed come three times: they reach the checks behind the decoder
MUTATIONS = ["tag", "shared", "bignum", "date", "embedded", "cose", "deep", "length", "indefinite", "duplicate_key",
             "simple", "huge", "many", "garbage"] + 3 * ["decimal", "width", "integer", "float", "map_key", "drop", "text",
                                                 "swap", "splice"]


# the items a mutation changes anything at; the others apply anywhere
_FITS = {
    "map_key": lambda item: item.major == 5,
    "duplicate_key": lambda item: item.major == 5 and item.items,
    "drop": lambda item: item.major in (4, 5) and item.items,
    "length": lambda item: item.major in (2, 3, 4, 5),
    "indefinite": lambda item: item.major in (2, 3, 4, 5),
    "width": lambda item: 0 <= item.major <= 6 and item.info != INDEFINITE,
    "many": lambda item: item.major in (4, 5),
}


@st.composite
def mutate(draw, root: Item, donors: tuple[Item, ...] = ()) -> Item:
    """One mutation at one item of the tree (drawn), the tree around it unchanged."""
    how = draw(st.sampled_from(MUTATIONS))
    fits = _FITS.get(how, lambda item: True)
    places = [(path, item) for path, item in nodes(root) if fits(item)]
    if not places:  # nothing in this tree it applies to: a hostile value instead
        how, places = "swap", list(nodes(root))
    path, target = draw(st.sampled_from(places))
    if how == "tag":
        new = tag(draw(st.sampled_from(TAG_NUMBERS)), target)
    elif how == "shared":
        new = shared_self_reference(draw, target)
    elif how == "bignum":
        new = draw(bignum())
    elif how == "decimal":
        new = draw(decimal_fraction())
    elif how == "date":
        new = draw(st.sampled_from([tag(1, of(1_764_400_000)), tag(1, float_item(1.7e9, 27)),
                                    tag(0, of("2025-11-29T00:00:00Z")), tag(1, of(-(2**64))), tag(0, of("x"))]))
    elif how == "embedded":
        inner = encode(draw(st.sampled_from([target, root])))
        new = tag(24, Item(2, len(inner), data=inner))
    elif how == "cose":  # a COSE_Sign1 nested where a value belongs
        new = tag(18, array(of(cbor2.dumps({1: -7, 4: b"x"})), of({}), of(encode(target)), of(bytes(64))))
    elif how == "deep":
        depth = draw(st.sampled_from([2, 15, 16, 17, 40, 100]))  # deeper: hand_written, as bytes
        new = target
        opener = draw(st.sampled_from(["array", "map", "tag"]))
        for _ in range(depth):
            new = (array(new) if opener == "array" else Item(5, 1, items=[of(0), new]) if opener == "map"
                   else tag(4, new))
    elif how == "length":  # the declared length lies: longer or shorter than the data
        new = shallow(target)
        new.arg = max(0, new.arg + draw(st.sampled_from([-2, -1, 1, 2, 100, 2**32, 2**63])))
        if new.major in (2, 3) and draw(st.booleans()):
            new.data = new.data[:draw(st.integers(0, len(new.data)))]
    elif how == "indefinite":
        new = shallow(target)
        if new.major in (2, 3, 4, 5):
            new.info = INDEFINITE
    elif how == "width":
        new = _widened(target, draw(st.sampled_from([24, 25, 26, 27])))
    elif how == "integer":
        new = of(draw(_ints()))
        if draw(st.booleans()):
            new = _widened(new, 27)
    elif how == "float":
        new = float_item(draw(st.sampled_from(FLOATS) | st.floats()), draw(st.sampled_from([25, 26, 27])))
    elif how == "map_key":
        new = shallow(target)
        if new.major == 5:
            key = of(draw(st.sampled_from(MAP_KEYS)))
            if new.items and draw(st.booleans()):
                new.items[2 * draw(st.integers(0, len(new.items) // 2 - 1))] = key  # a key replaced
            else:
                new.items += [key, draw(leaf())]
                new.arg += 1
    elif how == "duplicate_key":
        new = shallow(target)
        if new.major == 5 and new.items:
            k = 2 * draw(st.integers(0, len(new.items) // 2 - 1))
            value = shallow(new.items[k + 1]) if draw(st.booleans()) else draw(leaf())
            new.items += [shallow(new.items[k]), value]
            new.arg += 1
    elif how == "drop":
        new = shallow(target)
        if new.major == 5 and new.items:
            k = 2 * draw(st.integers(0, len(new.items) // 2 - 1))
            del new.items[k:k + 2]
            new.arg -= 1
        elif new.major == 4 and new.items:
            del new.items[draw(st.integers(0, len(new.items) - 1))]
            new.arg -= 1
    elif how == "text":
        if draw(st.booleans()):
            data = draw(st.sampled_from(BAD_UTF8))
            new = Item(3, len(data), data=data)
        else:
            new = of(draw(st.sampled_from(TEXTS) | st.text(max_size=70)))
    elif how == "simple":
        new = draw(st.sampled_from(SIMPLE))
    elif how == "huge":
        size = draw(st.sampled_from([64, 65, 1000, 1900, 2100]))
        new = of("h" * size if draw(st.booleans()) else b"h" * size)
    elif how == "many":  # a map with hundreds of keys, an array with hundreds of items
        count = draw(st.sampled_from([33, 100, 400]))
        new = shallow(target)
        if new.major == 5:
            first = draw(st.sampled_from([-500, 5, 1000, 2**40]))
            new.items += [x for k in range(first, first + count) for x in (of(k), of(0))]
            new.arg += count
        else:
            new = array(*[target] * count) if draw(st.booleans()) else array(*[of(k) for k in range(count)])
    elif how == "swap":
        new = draw(leaf())
    elif how == "splice":  # an item of this or another valid message in its place
        donor = draw(st.sampled_from((root,) + tuple(donors)))
        new = shallow(draw(st.sampled_from([n for _, n in nodes(donor)])))
    else:
        new = raw(draw(st.binary(min_size=1, max_size=12)))
    return replaced(root, path, new)


@st.composite
def mutated(draw, root: Item, donors: tuple[Item, ...] = (), max_mutations: int = 3) -> bytes:
    """A tree after 1..max_mutations mutations, written out; sometimes cut or spliced at the byte level."""
    for _ in range(draw(st.sampled_from([1, 1, 1, max_mutations]))):
        root = draw(mutate(root, donors))
    data = encode(root)
    cut = draw(st.sampled_from(["none"] * 12 + ["truncate", "append", "splice"]))
    if cut == "truncate" and len(data) > 1:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif cut == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    elif cut == "splice" and donors:
        other = encode(draw(st.sampled_from(donors)))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + other[draw(st.integers(0, len(other))):]
    return data


# -- valid messages, as the firmware builds them ------------------------------------------------

# docs/FORMAT.md, "Measurement names and units": the BME280 and SDS011 of a street node,
# each value in the fixed point the firmware sends (mantissa, exponent)
SENSORS = [("temp", "Cel", -2, (-4000, 8500)), ("hum", "%RH", -2, (0, 10000)), ("press", "Pa", 0, (30000, 110000)),
           ("pm2_5", "ug/m3", -1, (0, 9999)), ("pm10", "ug/m3", -1, (0, 9999))]
T0 = 1_764_400_000  # 2025-11-29: node clocks in the past of any test run


@st.composite
def measurements(draw) -> list:
    """What one BME280 + SDS011 reading holds: some of the five quantities, in the firmware's order."""
    chosen = draw(st.lists(st.sampled_from(SENSORS), min_size=1, max_size=5, unique=True))
    return [(name, unit, (draw(st.integers(lo, hi)), exp)) for name, unit, exp, (lo, hi) in
            sorted(chosen, key=SENSORS.index)]


def pack_tree(seq: int, time: int | None, ms: list) -> Item:
    """The SenML pack the firmware signs (firmware/reading.py), as a tree."""
    reading = firmware("reading")
    return parse(reading.cbor.encode(reading.pack(seq, time, ms)))


def sign_payload(key, device_id: str, payload: bytes, protected: bytes | None = None) -> bytes:
    """A device message with a valid ES256 signature over whatever payload (and header) bytes."""
    return cose_sign1(key, payload, protected=protected if protected is not None else
                      cbor2.dumps({1: -7, 4: device_id.encode()}))


# -- hand-written hostile messages ------------------------------------------------------------------


def hand_written(key, device_id: str, seq: int) -> list[tuple[str, bytes]]:
    """Hostile messages an attacker writes by hand, each with what it tries; signed where it matters."""
    kid = device_id.encode()
    signed = lambda payload, **kw: sign_payload(key, device_id, cbor2.dumps(payload) if not isinstance(
        payload, bytes) else payload, **kw)
    first = {0: "temp", 1: "Cel", 2: cbor2.CBORTag(4, [-2, 2153]), "seq": seq, -3: T0 + seq}
    self_ref = b"\xa2\x01\xd8\x1c\x81\xd8\x1d\x00\x04" + bytes([0x40 + len(kid)]) + kid
    out = [
        # issue 10, case 1: a protected header holding a shared value that refers to itself
        ("shared value referring to itself in the protected header",
         cose_sign1(key, cbor2.dumps([first]), protected=self_ref)),
        # issue 10, case 2: a sequence number no 64-bit signed column holds
        ("seq 2^63", signed([{**first, "seq": 2**63}])),
        ("seq 2^64-1", signed([{**first, "seq": 2**64 - 1}])),
        # issue 10, case 3: a decimal fraction that is billions of digits written out
        ("decimal fraction 4([3000000000, 5])", signed([{**first, 2: cbor2.CBORTag(4, [3_000_000_000, 5])}])),
        ("decimal fraction 4([100000000, 5])", signed([{**first, 2: cbor2.CBORTag(4, [10**8, 5])}])),
        ("decimal fraction of the largest exponent and mantissa",
         signed([{**first, 2: cbor2.CBORTag(4, [18, 2**53])}])),
        ("decimal fraction of the smallest exponent", signed([{**first, 2: cbor2.CBORTag(4, [-18, -(2**53)])}])),
        ("largest float", signed([{**first, 0: "x", 2: 1.7976931348623157e308},
                                   {0: "y", 2: -1.7976931348623157e308}])),
        ("integers at the 64-bit bounds", signed([{**first, 0: "count", 2: 2**63 - 1}, {0: "off", 2: -(2**63)}])),
        ("bt at 2^32-1", signed([{**first, -3: 2**32 - 1}])),
        ("bt as a float", signed([{**first, -3: float(T0)}])),
        ("32 records", signed([first] + [{0: f"m{i}", 2: i} for i in range(31)])),
        ("33 records", signed([first] + [{0: f"m{i}", 2: i} for i in range(32)])),
        ("a map with a key twice", signed(encode(Item(4, 1, items=[Item(5, 6, items=of(first).items + [
            of(0), of("hum")])])))),
        ("a 2048-byte message", signed([{**first, 3: "s" * 1900}])),
        ("a 2049-byte message", signed([{**first, 3: "s" * 1970}])),
        ("1 MB of garbage", b"\xd2\x84" + bytes(1_000_000)),
        ("empty", b""),
        ("a lone break", b"\xff"),
        ("an indefinite array never closed", b"\xd2\x9f" * 600),
        ("nested arrays 10000 deep", b"\x81" * 10_000),
        ("a tag nested 10000 deep", b"\xd2" * 10_000 + b"\x00"),
        ("a byte string declaring 2^64-1 bytes", b"\xd2\x84\x5b" + b"\xff" * 8),
        ("an array declaring 2^64-1 items", b"\xd2\x9b" + b"\xff" * 8),
    ]
    return out


# -- the batch a gateway signs ------------------------------------------------------------------------


def aggregate_map(device_id: str, seq: int) -> dict:
    """One aggregate of the shape docs/FORMAT.md gives ("The batch"), as the gateway writes it."""
    return {"device_id": device_id, "name": "temp", "unit": "Cel", "window_start": T0, "window_end": T0 + 60,
            "count": 3, "min": 21.5, "max": 21.7, "mean": 21.6, "stdev": 0.08, "last": 21.7,
            "first_seq": seq, "last_seq": seq + 2}



# -- byte-level edits of a whole message ----------------------------------------------------------

byte_edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def apply_edits(message: bytes, ops) -> bytes:
    """Bytes inserted, deleted or replaced at positions taken modulo the length."""
    buf = bytearray(message)
    for op, where, value in ops:
        pos = where % (len(buf) + 1)
        if op == "insert":
            buf.insert(pos, value)
        elif buf and pos < len(buf):
            if op == "delete":
                del buf[pos]
            else:
                buf[pos] = value
    return bytes(buf)
