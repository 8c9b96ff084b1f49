"""govedge.core.wire refuses every message that is not exactly a valid signed reading.

Crafted messages carry valid ES256 signatures (made with cryptography, see
support.cose_sign1), so each is refused for its contents and the test can hold
the verifier to the right code and a reason that names the fault.
"""

from __future__ import annotations

import math
from collections import Counter

import cbor2
import pytest

from govedge.core import wire
from support import (
    ALG_ES256,
    ALG_ES384,
    cose_sign1,
    lookup,
    private_key,
    protected_header,
    public_key,
    scalar,
    senml,
)

KEY = private_key(scalar("crafted-device"))
DEVICE = "sensor-1"
KEYS = lookup(KEY.public_key(), device_id=DEVICE)


def signed(payload=None, **kwargs) -> bytes:
    """A message of DEVICE signed with KEY; payload defaults to a valid SenML pack."""
    return cose_sign1(KEY, senml() if payload is None else payload, **kwargs)


def refused(message, keys=KEYS) -> wire.WireError:
    with pytest.raises(wire.WireError) as exc:
        wire.verify(message, keys)
    return exc.value


def test_crafted_baseline_verifies():
    # the crafted messages below differ from this one in one respect each
    reading = wire.verify(signed(), KEYS)
    assert (reading.device_id, reading.seq, reading.time) == (DEVICE, 1, 1_732_857_600)
    assert [(m.name, m.unit, m.value) for m in reading.measurements] == [("temp", "Cel", 21.5)]


# --- every single-byte change of a firmware message ----------------------------------


def test_every_single_byte_change_of_a_firmware_message_is_refused(firmware_readings):
    fr = firmware_readings["small"]
    keys = lookup(public_key(fr.d))
    wire.verify(fr.message, keys)
    accepted, other_errors, codes = [], [], Counter()
    buf = bytearray(fr.message)
    for pos, original in enumerate(fr.message):
        for value in range(256):
            if value == original:
                continue
            buf[pos] = value
            try:
                wire.verify(bytes(buf), keys)
            except wire.WireError as exc:
                codes[exc.code] += 1
            except Exception as exc:  # anything but WireError is a verifier bug
                other_errors.append((pos, value, repr(exc)))
            else:
                accepted.append((pos, value))
        buf[pos] = original
    assert not accepted, f"accepted single-byte changes (position, byte): {accepted[:10]}"
    assert not other_errors, other_errors[:10]
    assert sum(codes.values()) == 255 * len(fr.message)
    # every change inside r || s reaches the signature check; most others fail earlier
    assert codes["bad_signature"] >= 64 * 255 and codes["not_cbor"] > 0


# --- crafted messages: code and reason -------------------------------------------------

CASES = {
    # id: (message, code, words the reason must contain)
    "empty": (b"", "not_cbor", "empty"),
    "not-cbor": (b"\xff\x00\x00", "not_cbor", "not valid CBOR"),
    "truncated": (signed()[:-1], "not_cbor", "not valid CBOR"),
    "trailing-bytes": (signed() + b"\x00", "not_cbor", "1 bytes after"),
    "untagged": (signed(tag=None), "not_cose_sign1", "tag 18 missing"),
    "wrong-tag-cose-sign": (signed(tag=98), "not_cose_sign1", "tag 98"),
    "wrong-tag-mac0": (signed(tag=17), "not_cose_sign1", "tag 17"),
    "array-of-3": (cbor2.dumps(cbor2.CBORTag(18, [protected_header(), {}, b""])), "malformed_cose", "4 items"),
    "protected-not-bytes": (cbor2.dumps(cbor2.CBORTag(18, [{1: -7}, {}, cbor2.dumps(senml()), b"\x00" * 64])),
                            "malformed_cose", "protected"),
    "detached-payload": (cbor2.dumps(cbor2.CBORTag(18, [protected_header(), {}, None, b"\x00" * 64])),
                         "malformed_cose", "payload"),
    "signature-63-bytes": (signed(signature=b"\x01" * 63), "malformed_cose", "64 bytes"),
    "unprotected-kid": (signed(unprotected={4: b"sensor-1"}), "malformed_cose", "unprotected header must be empty"),
    "unprotected-alg": (signed(unprotected={1: ALG_ES256}), "malformed_cose", "unprotected header must be empty"),
    "protected-empty": (signed(protected=b""), "bad_header", "protected header is empty"),
    "protected-not-map": (signed(protected=cbor2.dumps([1, -7])), "bad_header", "not a map"),
    "protected-extra-label": (signed(protected=protected_header(extra={3: 0})), "bad_header", "unexpected labels"),
    "missing-alg": (signed(protected=protected_header(alg=None)), "missing_field", "no alg"),
    "missing-kid": (signed(protected=protected_header(kid=None)), "missing_field", "no kid"),
    "wrong-alg-es384": (signed(protected=protected_header(alg=ALG_ES384)), "wrong_algorithm", "-35"),
    "wrong-alg-text": (signed(protected=protected_header(alg="ES256")), "wrong_algorithm", "ES256"),
    "kid-text": (signed(protected=protected_header(kid=DEVICE)), "bad_header", "kid must be a byte string"),
    "kid-not-utf8": (signed(protected=protected_header(kid=b"\xff\xfe")), "bad_header", "UTF-8"),
    "kid-not-device-id": (signed(protected=protected_header(kid=b"a b")), "bad_header", "not a device id"),
    "kid-65-bytes": (signed(protected=protected_header(kid=b"k" * 65)), "bad_header", "not a device id"),
    "payload-not-array": (signed(payload={0: "temp", 2: 1, "seq": 1}), "not_senml", "not a SenML pack"),
    "payload-text": (signed(payload="hello"), "not_senml", "not a SenML pack"),
    "payload-not-cbor": (signed(payload=b"\x1c"), "not_cbor", "payload is not valid CBOR"),
    "empty-pack": (signed(payload=[]), "not_senml", "no records"),
    "33-records": (signed(payload=senml(records=[{0: f"r{i}", 2: i} for i in range(33)])), "not_senml", "33 records"),
    "first-record-not-map": (signed(payload=[[0, "temp"]]), "not_senml", "record 1 is not a map"),
    "missing-seq": (signed(payload=senml(seq=None)), "missing_field", "sequence number ('seq')"),
    "seq-float": (signed(payload=senml(seq=1.0)), "bad_sequence", "not an integer: 1.0"),
    "seq-string": (signed(payload=senml(seq="1")), "bad_sequence", "not an integer: '1'"),
    "seq-bool": (signed(payload=senml(seq=True)), "bad_sequence", "not an integer: True"),
    "seq-negative": (signed(payload=senml(seq=-1)), "bad_sequence", "outside 0..2**63-1"),
    "seq-2**64": (signed(payload=senml(seq=2**64)), "not_cbor", "bignum"),  # past the 64-bit head
    "seq-in-second-record": (signed(payload=senml(records=[{0: "a", 2: 1}, {0: "b", 2: 2, "seq": 3}])),
                             "bad_record", "record 2 has unexpected fields"),
    "bt-relative": (signed(payload=senml(bt=1000)), "bad_time", "not an absolute time"),
    "bt-just-below-2**28": (signed(payload=senml(bt=2**28 - 1)), "bad_time", "not an absolute time"),
    "bt-negative": (signed(payload=senml(bt=-1_732_857_600)), "bad_time", "not an absolute time"),
    "bt-inf": (signed(payload=senml(bt=math.inf)), "bad_time", "not a number"),
    "bt-minus-inf": (signed(payload=senml(bt=-math.inf)), "bad_time", "not a number"),
    "bt-nan": (signed(payload=senml(bt=math.nan)), "bad_time", "not a number"),
    "bt-string": (signed(payload=senml(bt="2024-11-29")), "bad_time", "not a number"),
    "bt-bool": (signed(payload=senml(bt=True)), "bad_time", "not a number"),
    "bt-in-second-record": (signed(payload=senml(records=[{0: "a", 2: 1}, {0: "b", 2: 2, -3: 2**30}])),
                            "bad_record", "record 2 has unexpected fields"),
    "record-without-name": (signed(payload=senml(records=[{1: "Cel", 2: 1}])), "missing_field", "no name"),
    "name-not-text": (signed(payload=senml(records=[{0: b"temp", 2: 1}])), "bad_record", "invalid name"),
    "name-with-space": (signed(payload=senml(records=[{0: "air temp", 2: 1}])), "bad_record", "invalid name"),
    "duplicate-names": (signed(payload=senml(records=[{0: "temp", 2: 1}, {0: "rh", 2: 2}, {0: "temp", 2: 3}])),
                        "bad_record", "repeats the name 'temp'"),
    "record-without-value": (signed(payload=senml(records=[{0: "temp", 1: "Cel"}])), "missing_field",
                             "exactly one value"),
    "two-values": (signed(payload=senml(records=[{0: "temp", 2: 1, 4: True}])), "bad_record", "exactly one value"),
    "value-string": (signed(payload=senml(records=[{0: "temp", 2: "21.5"}])), "bad_record", "not a finite number"),
    "value-bool": (signed(payload=senml(records=[{0: "temp", 2: True}])), "bad_record", "not a finite number"),
    "value-nan": (signed(payload=senml(records=[{0: "temp", 2: math.nan}])), "bad_record", "not a finite number"),
    "value-inf": (signed(payload=senml(records=[{0: "temp", 2: math.inf}])), "bad_record", "not a finite number"),
    "value-null": (signed(payload=senml(records=[{0: "temp", 2: None}])), "bad_record", "not a finite number"),
    "value-array": (signed(payload=senml(records=[{0: "temp", 2: [1]}])), "bad_record", "not a finite number"),
    "vs-not-text": (signed(payload=senml(records=[{0: "fw", 3: 1}])), "bad_record", "string value"),
    "vb-not-bool": (signed(payload=senml(records=[{0: "door", 4: 1}])), "bad_record", "boolean value"),
    "unit-empty": (signed(payload=senml(records=[{0: "temp", 1: "", 2: 1}])), "bad_record", "invalid unit"),
    "unit-not-text": (signed(payload=senml(records=[{0: "temp", 1: 7, 2: 1}])), "bad_record", "invalid unit"),
    "base-name-label": (signed(payload=senml(records=[{0: "temp", -2: "urn:dev:", 2: 1}])), "bad_record",
                        "unexpected fields"),
    "record-label-5": (signed(payload=senml(records=[{0: "temp", 2: 1, 5: 1}])), "bad_record", "unexpected fields"),
    "indefinite-payload": (signed(payload=b"\x9f" + cbor2.dumps(senml()[0]) + b"\xff"), "not_cbor",
                           "payload is not valid CBOR"),
    "duplicate-key-in-record": (signed(payload=b"\x81\xa4\x00\x61a\x02\x01\x63seq\x01\x00\x61b"), "not_cbor",
                                "payload is not valid CBOR"),
    "duplicate-key-in-header": (signed(protected=b"\xa3\x01\x26\x04\x48sensor-1\x01\x26"), "not_cbor",
                                "protected header is not valid CBOR"),
    "oversize": (signed(payload=senml(records=[{0: "blob", 3: "x" * 2000}])), "too_large", "exceeds 2048"),
    "deep-nesting": (b"\xd2" + b"\x81" * 2000 + b"\x00", "not_cbor", "not valid CBOR"),
    # hostile input: each of these once stopped or swamped a service downstream
    "shared-value-referring-to-itself": (signed(protected=bytes.fromhex("a201d81c81d81d0004")
                                                + cbor2.dumps(DEVICE.encode())),
                                         "not_cbor", "protected header holds a CBOR shared"),
    "shared-value-in-payload": (signed(payload=bytes.fromhex("81d81c81d81d00")), "not_cbor",
                                "payload holds a CBOR shared"),
    "seq-2**63": (signed(payload=senml(seq=2**63)), "bad_sequence", "outside 0..2**63-1"),
    "decimal-exponent-huge": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(4, [3_000_000_000, 5])}])),
                              "bad_record", "exponent outside -18..18"),
    "decimal-exponent-tiny": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(4, [-19, 5])}])),
                              "bad_record", "exponent outside -18..18"),
    "decimal-mantissa-2**53+1": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(4, [-2, 2**53 + 1])}])),
                                 "bad_record", "mantissa outside"),
    "decimal-not-a-pair": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(4, "x")}])),
                           "not_cbor", "payload is not valid CBOR"),
    "value-integer-2**63": (signed(payload=senml(records=[{0: "temp", 2: 2**63}])), "bad_record",
                            "outside the 64-bit range"),
    "value-epoch-date-tag": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(1, 5)}])), "not_cbor",
                             "epoch date (CBOR tag 1)"),
    "value-unknown-tag": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(40000, 5)}])), "not_cbor",
                          "CBOR tag 40000, which this format does not use"),
    "cose-tag-inside-payload": (signed(payload=senml(records=[{0: "temp", 2: cbor2.CBORTag(18, [1])}])),
                                "not_cbor", "COSE_Sign1 (CBOR tag 18)"),
    "bt-2**32": (signed(payload=senml(bt=2**32)), "bad_time", "after 2106"),
    "bt-2**63": (signed(payload=senml(bt=2**63)), "bad_time", "after 2106"),
    "name-65-chars": (signed(payload=senml(records=[{0: "t" * 65, 2: 1}])), "bad_record", "invalid name"),
    "unit-65-chars": (signed(payload=senml(records=[{0: "temp", 1: "C" * 65, 2: 1}])), "bad_record",
                      "invalid unit"),
    "unit-with-nul": (signed(payload=senml(records=[{0: "temp", 1: "C\x00el", 2: 1}])), "bad_record",
                      "invalid unit"),
    "string-value-with-escape": (signed(payload=senml(records=[{0: "fw", 3: "1.4\x1b[2J"}])), "bad_record",
                                 "control character"),
    "tag-not-cose": (b"\xc6" * 2000 + b"\x00", "not_cose_sign1", "has CBOR tag 6, expected 18"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_message_is_refused_with_code_and_reason(case):
    message, code, words = CASES[case]
    exc = refused(message)
    assert exc.code == code, str(exc)
    assert words in str(exc) and words in exc.reason


def test_unknown_device_is_named_when_the_registry_has_no_keys():
    exc = refused(signed(), keys=lambda device: [])
    assert exc.code == "unknown_device" and "'sensor-1'" in str(exc)


def test_unknown_device_is_named_when_the_registry_raises_key_error():
    exc = refused(signed(), keys=lookup(KEY.public_key(), device_id="other-device"))
    assert exc.code == "unknown_device" and "'sensor-1'" in str(exc)


def test_message_signed_by_another_key_is_a_bad_signature():
    message = cose_sign1(private_key(scalar("impostor")), senml())
    exc = refused(message)
    assert exc.code == "bad_signature" and "'sensor-1'" in str(exc)


def test_signature_over_other_contents_is_a_bad_signature():
    # a genuine signature, moved onto a payload it was not made for
    genuine = cbor2.loads(signed(payload=senml(seq=1))).value
    moved = cbor2.dumps(cbor2.CBORTag(18, [genuine[0], {}, cbor2.dumps(senml(seq=2)), genuine[3]]))
    assert refused(moved).code == "bad_signature"


@pytest.mark.parametrize("r_s", [(0, 1), (1, 0), (wire._P256_N, 1), (2**256 - 1, 2**256 - 1)])
def test_out_of_range_signature_values_are_a_bad_signature(r_s):
    sig = r_s[0].to_bytes(32, "big") + r_s[1].to_bytes(32, "big")
    assert refused(signed(signature=sig)).code == "bad_signature"


def test_message_type_must_be_bytes():
    with pytest.raises(wire.WireError) as exc:
        wire.decode_unverified("d284")
    assert exc.value.code == "not_cbor"


# --- limits that are accepted --------------------------------------------------------


def test_sequence_number_range_edges_verify():
    for seq in (0, 2**63 - 1):
        assert wire.verify(signed(payload=senml(seq=seq)), KEYS).seq == seq


def test_value_bounds_edges_verify():
    edges = [{0: "a", 2: cbor2.CBORTag(4, [-18, 2**53])}, {0: "b", 2: cbor2.CBORTag(4, [18, -(2**53)])},
             {0: "c", 2: 2**63 - 1}, {0: "d", 2: -(2**63)}, {0: "e", 1: "u" * 64, 2: 1}, {0: "n" * 64, 2: 1}]
    reading = wire.verify(signed(payload=senml(records=edges, bt=2**32 - 1)), KEYS)
    assert reading.time == 2**32 - 1 and [m.value for m in reading.measurements][2:4] == [2**63 - 1, -(2**63)]


def test_error_messages_are_short_for_any_value():
    # a refused value is named in a few words, however large or deep it is
    deep = [[[[[[[[[[[[1]]]]]]]]]]]]
    for value in (deep, {i: i for i in range(200)}, "x" * 1500, b"y" * 1500, cbor2.CBORTag(4, [10**9, 1])):
        exc = refused(signed(payload=senml(records=[{0: "temp", 2: value}])))
        assert exc.code in ("bad_record", "not_cbor") and len(str(exc)) < 200, str(exc)


def test_earliest_absolute_time_verifies():
    assert wire.verify(signed(payload=senml(bt=2**28)), KEYS).time == 2**28


def test_message_of_exactly_2048_bytes_verifies_and_2049_does_not():
    def of_length(pad):
        return signed(payload=senml(records=[{0: "blob", 3: "x" * pad}]))

    pad = 2000 - (len(of_length(2000)) - 2048)
    exact = of_length(pad)
    assert len(exact) == 2048
    assert wire.verify(exact, KEYS).value("blob") == "x" * pad
    over = of_length(pad + 1)
    assert len(over) == 2049
    assert refused(over).code == "too_large"


def test_firmware_reading_without_clock_verifies_with_time_none(firmware_readings):
    fr = firmware_readings["no_clock"]
    reading = wire.verify(fr.message, lookup(public_key(fr.d)))
    assert reading.time is None
    assert -3 not in cbor2.loads(reading.payload)[0]


# --- key rotation ------------------------------------------------------------------------


def test_rotation_verifies_with_the_second_of_two_keys(firmware_readings):
    fr = firmware_readings["street"]
    retired = public_key(scalar("lamp-17-retired"))
    reading = wire.verify(fr.message, lookup(retired, public_key(fr.d), device_id=fr.device_id))
    assert (reading.device_id, reading.seq) == (fr.device_id, fr.seq)


def test_rotation_verifies_with_the_first_of_two_keys(firmware_readings):
    fr = firmware_readings["street"]
    newer = public_key(scalar("lamp-17-next"))
    assert wire.verify(fr.message, lookup(public_key(fr.d), newer)).seq == fr.seq


def test_rotation_refuses_when_neither_key_signed(firmware_readings):
    fr = firmware_readings["street"]
    keys = lookup(public_key(scalar("lamp-17-retired")), public_key(scalar("lamp-17-next")))
    assert refused(fr.message, keys).code == "bad_signature"


# --- labels must be the integers of the format, not values equal to them -------------

@pytest.mark.parametrize(
    "header",
    [{1.0: ALG_ES256, 4: DEVICE.encode()}, {True: ALG_ES256, 4: DEVICE.encode()}, {1: ALG_ES256, 4.0: DEVICE.encode()}],
    ids=["alg-label-1.0", "alg-label-true", "kid-label-4.0"],
)
def test_header_label_that_only_equals_an_integer_label_is_refused(header):
    assert refused(signed(protected=cbor2.dumps(header))).code == "bad_header"


@pytest.mark.parametrize(
    "record",
    [{False: "temp", 2: 1}, {0.0: "temp", 2: 1}, {0: "temp", 2.0: 1}, {0: "temp", True: "Cel", 2: 1}],
    ids=["name-label-false", "name-label-0.0", "value-label-2.0", "unit-label-true"],
)
def test_record_label_that_only_equals_an_integer_label_is_refused(record):
    assert refused(signed(payload=senml(records=[record]))).code == "bad_record"


# --- bignums ---------------------------------------------------------------------------

# the format's integers are CBOR's native ones (at most 64 bits); a bignum (tag 2/3) is
# refused wherever it stands, so no field can carry an integer too long to even print
HUGE = int.from_bytes(b"\xff" * 1790, "big")

HUGE_CASES = {
    "seq-huge": (senml(seq=HUGE), None, "bad_sequence"),
    "seq-huge-negative": (senml(seq=-HUGE), None, "bad_sequence"),
    "seq-list-of-huge": (senml(seq=[HUGE]), None, "bad_sequence"),
    "bt-huge-negative": (senml(bt=-HUGE), None, "bad_time"),
    "bt-list-of-huge": (senml(bt=[HUGE]), None, "bad_time"),
    "name-huge": (senml(records=[{0: HUGE, 2: 1}]), None, "bad_record"),
    "unit-huge": (senml(records=[{0: "temp", 1: HUGE, 2: 1}]), None, "bad_record"),
    "value-list-of-huge": (senml(records=[{0: "temp", 2: [HUGE]}]), None, "bad_record"),
    "record-label-huge": (senml(records=[{0: "temp", 2: 1, HUGE: 1}]), None, "bad_record"),
    "alg-huge": (senml(), {1: HUGE, 4: DEVICE.encode()}, "wrong_algorithm"),
    "header-label-huge": (senml(), {1: ALG_ES256, 4: DEVICE.encode(), HUGE: 0}, "bad_header"),
    "seq-small-bignum": (senml(seq=cbor2.CBORTag(2, b"\x07")), None, "bad_sequence"),
    "value-negative-bignum": (senml(records=[{0: "temp", 2: cbor2.CBORTag(3, b"\x07")}]), None, "bad_record"),
}


@pytest.mark.parametrize("case", list(HUGE_CASES))
def test_bignum_anywhere_is_refused_and_named(case):
    payload, header, _field_code = HUGE_CASES[case]
    message = signed(payload=payload, protected=None if header is None else cbor2.dumps(header))
    assert len(message) <= 2048
    exc = refused(message)
    assert exc.code == "not_cbor" and "bignum" in exc.reason
