# A signed reading: a SenML pack (RFC 8428, CBOR representation) carrying the
# node's sequence number and clock time, wrapped in a tagged COSE_Sign1
# (RFC 9052) signed with ES256. docs/FORMAT.md describes the bytes.

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

import cbor
import p256

_ALG_ES256 = const(-7)  # RFC 9053 section 2.1
_TAG_COSE_SIGN1 = const(18)  # RFC 9052 section 2
_TAG_DECIMAL = const(4)  # RFC 8949 section 3.4.4, decimal fraction [exponent, mantissa]

# SenML CBOR labels, RFC 8428 section 6
_BASE_TIME = const(-3)
_NAME = const(0)
_UNIT = const(1)
_VALUE = const(2)
_STRING_VALUE = const(3)
_BOOL_VALUE = const(4)
SEQUENCE = "seq"  # extension field of this format, in the first record


def _value(value):
    # a measurement is an int, a float, or a fixed-point (mantissa, exponent)
    if isinstance(value, tuple):
        return cbor.Tag(_TAG_DECIMAL, [value[1], value[0]])
    return value


def pack(seq, time, measurements):
    """SenML records for measurements [(name, unit, value), ...].

    time is the node's clock in whole seconds since 1970, or None when the clock
    has not been set; then the pack carries no time at all.
    """
    records = []
    for name, unit, value in measurements:
        rec = {_NAME: name}
        if unit:
            rec[_UNIT] = unit
        if isinstance(value, bool):
            rec[_BOOL_VALUE] = value
        elif isinstance(value, str):
            rec[_STRING_VALUE] = value
        else:
            rec[_VALUE] = _value(value)
        records.append(rec)
    if not records:
        raise ValueError("a reading needs at least one measurement")
    first = records[0]
    first[SEQUENCE] = seq
    if time is not None:
        first[_BASE_TIME] = time
    return records


def protected_header(kid):
    return cbor.encode({1: _ALG_ES256, 4: kid})


def sign1(d, kid, payload):
    """Tagged COSE_Sign1 over payload bytes, ES256 with private scalar d."""
    protected = protected_header(kid)
    # Sig_structure, RFC 9052 section 4.4: ["Signature1", protected, external_aad, payload]
    to_sign = cbor.encode(["Signature1", protected, b"", payload])
    signature = p256.sign(d, to_sign)
    return cbor.encode(cbor.Tag(_TAG_COSE_SIGN1, [protected, {}, payload, signature]))


def signed_reading(d, device_id, seq, time, measurements):
    """The bytes a node sends: one signed reading of device_id."""
    if not 0 <= seq < 0x10000000000000000:
        raise ValueError("sequence number out of range")
    payload = cbor.encode(pack(seq, time, measurements))
    return sign1(d, device_id.encode(), payload)
