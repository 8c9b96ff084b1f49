# CBOR encoder (RFC 8949), the subset a sensor node writes: integers, byte and
# text strings, arrays, maps, tags, floats, true/false/null. Output follows the
# deterministic encoding rules of RFC 8949 section 4.2.1: shortest heads, map
# keys sorted by their encoded bytes, floats in the shortest of binary32 and
# binary64 that keeps the value. Runs on MicroPython and CPython alike.

import struct


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _head(out, major, n):
    # RFC 8949 section 3: initial byte with major type and argument
    m = major << 5
    if n < 24:
        out.append(m | n)
    elif n < 0x100:
        out.append(m | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(m | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(m | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(m | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise ValueError("integer out of CBOR range")


def encode_into(out, obj):
    """Append the CBOR encoding of obj to the bytearray out."""
    if obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, (bytes, bytearray)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, str):
        b = obj.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for item in obj:
            encode_into(out, item)
    elif isinstance(obj, dict):
        pairs = []
        for key in obj:
            k = bytearray()
            encode_into(k, key)
            pairs.append((bytes(k), obj[key]))
        pairs.sort(key=lambda kv: kv[0])
        _head(out, 5, len(pairs))
        for k, value in pairs:
            out.extend(k)
            encode_into(out, value)
    elif isinstance(obj, Tag):
        _head(out, 6, obj.tag)
        encode_into(out, obj.value)
    elif isinstance(obj, float):
        try:
            single = struct.pack(">f", obj)
        except OverflowError:  # CPython: beyond the binary32 range
            single = b"\xff\xff\xff\xff"  # NaN, never equal: binary64 below
        if struct.unpack(">f", single)[0] == obj:
            out.append(0xFA)
            out.extend(single)
        else:
            out.append(0xFB)
            out.extend(struct.pack(">d", obj))
    else:
        raise TypeError("cannot encode %s as CBOR" % type(obj).__name__)


def encode(obj):
    out = bytearray()
    encode_into(out, obj)
    return bytes(out)
