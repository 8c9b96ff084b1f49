"""Signed readings interoperate with COSE and ECDSA implementations nobody here wrote.

Firmware messages (signed under MicroPython from the .mpy files) verify with
pycose and python-ecdsa without govedge.core.wire; messages made by pycose verify
with govedge.core.wire and decode to exactly what was put in.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import cbor2
import ecdsa
import pytest
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from govedge.core import wire
from support import (
    MPY_PRELUDE,
    READINGS,
    hex_lines,
    lookup,
    mpy_literal,
    public_key,
    pycose_with_cbor2_6,
    scalar,
    sec1,
    sig_structure,
)


def expected_value(value):
    """What a firmware measurement value must decode to: tuples are exact decimal fractions."""
    if isinstance(value, tuple):
        mantissa, exponent = value
        return Decimal(f"{mantissa}E{exponent}")
    return value


def assert_same_value(got, want):
    assert type(got) is type(want), (got, want)
    if isinstance(want, Decimal):
        # same number and same exponent: 21.5 must not come back as 21.50
        assert got.as_tuple() == want.as_tuple()
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want


def ec2_public(d: int) -> EC2Key:
    point = sec1(d)
    return EC2Key(crv=P256, x=point[1:33], y=point[33:])


def ec2_private(d: int) -> EC2Key:
    point = sec1(d)
    return EC2Key(crv=P256, x=point[1:33], y=point[33:], d=d.to_bytes(32, "big"))


# --- firmware -> pycose / python-ecdsa / plain cbor2 --------------------------------


@pytest.mark.parametrize("name", list(READINGS))
def test_firmware_reading_verifies_with_pycose(firmware_readings, name):
    fr = firmware_readings[name]
    with pycose_with_cbor2_6():
        msg = Sign1Message.decode(fr.message)
    assert isinstance(msg, Sign1Message)
    assert msg.phdr == {Algorithm: Es256, KID: fr.device_id.encode()}
    assert msg.uhdr == {}
    msg.key = ec2_public(fr.d)
    assert msg.verify_signature() is True


@pytest.mark.parametrize("name", list(READINGS))
def test_firmware_reading_fails_pycose_with_another_key(firmware_readings, name):
    # the positive pycose check above means something only if pycose can say no
    with pycose_with_cbor2_6():
        msg = Sign1Message.decode(firmware_readings[name].message)
    msg.key = ec2_public(scalar("someone-else"))
    assert msg.verify_signature() is False


@pytest.mark.parametrize("name", list(READINGS))
def test_firmware_reading_verifies_with_python_ecdsa(firmware_readings, name):
    fr = firmware_readings[name]
    item = cbor2.loads(fr.message)
    assert item.tag == 18
    protected, unprotected, payload, signature = item.value
    assert unprotected == {} and len(signature) == 64
    vk = ecdsa.VerifyingKey.from_string(sec1(fr.d), curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    assert vk.verify(signature, sig_structure(protected, payload), hashfunc=hashlib.sha256)
    with pytest.raises(ecdsa.BadSignatureError):
        vk.verify(signature, sig_structure(protected, payload + b"\x00"), hashfunc=hashlib.sha256)


@pytest.mark.parametrize("name", list(READINGS))
def test_firmware_public_key_is_the_one_cryptography_derives(firmware_readings, name):
    fr = firmware_readings[name]
    assert fr.public_key == sec1(fr.d)


@pytest.mark.parametrize("name", list(READINGS))
def test_firmware_payload_is_the_senml_pack_that_was_asked_for(firmware_readings, name):
    # read with cbor2 alone, so the firmware's pack is checked without govedge.core.wire
    fr = firmware_readings[name]
    protected, _, payload, _ = cbor2.loads(fr.message).value
    assert cbor2.loads(protected) == {1: -7, 4: fr.device_id.encode()}
    records = cbor2.loads(payload)
    assert len(records) == len(fr.measurements)
    first = records[0]
    assert type(first["seq"]) is int and first["seq"] == fr.seq
    if fr.time is None:
        assert -3 not in first
    else:
        assert first[-3] == fr.time
    for i, (rec, (n, unit, value)) in enumerate(zip(records, fr.measurements)):
        extra = {"seq", -3} if i == 0 else set()
        label = 4 if isinstance(value, bool) else 3 if isinstance(value, str) else 2
        assert set(rec) - extra == {0, label} | ({1} if unit else set())
        assert rec[0] == n and rec.get(1) == unit
        assert_same_value(rec[label], expected_value(value))


@pytest.mark.parametrize("name", list(READINGS))
def test_wire_verifies_firmware_reading_and_returns_what_was_signed(firmware_readings, name):
    fr = firmware_readings[name]
    reading = wire.verify(fr.message, lookup(public_key(fr.d), device_id=fr.device_id))
    assert (reading.device_id, reading.seq, reading.time) == (fr.device_id, fr.seq, fr.time)
    assert [(m.name, m.unit) for m in reading.measurements] == [(n, u) for n, u, _ in fr.measurements]
    for m, (_, _, value) in zip(reading.measurements, fr.measurements):
        assert_same_value(m.value, expected_value(value))
    assert reading.message == fr.message


def test_firmware_signing_is_deterministic_across_processes(micropython, firmware_readings):
    # RFC 6979: the same key and reading give the same bytes, run after run
    fr = firmware_readings["street"]
    script = MPY_PRELUDE + "import reading\nout(reading.signed_reading(*%s))\n" % mpy_literal(
        [fr.d, fr.device_id, fr.seq, fr.time, fr.measurements]
    )
    assert hex_lines(micropython(script)) == [fr.message]


# --- pycose -> govedge.core.wire ------------------------------------------------------------

PYCOSE_PACKS = {
    "decimal-int-float": (
        "esp32-0007",
        [
            {0: "temp", 1: "Cel", 2: cbor2.CBORTag(4, [-2, 2153]), "seq": 100000, -3: 1764300000},
            {0: "hum", 1: "%RH", 2: 48.25},
            {0: "press", 1: "Pa", 2: 100812},
        ],
        (100000, 1764300000),
        [("temp", "Cel", Decimal("21.53")), ("hum", "%RH", 48.25), ("press", "Pa", 100812)],
    ),
    "no-clock-bool-string": (
        "pole_9",
        [{0: "door", 4: False, "seq": 0}, {0: "fw", 3: "1.4.2"}, {0: "tilt", 1: "rad", 2: -0.125}],
        (0, None),
        [("door", None, False), ("fw", None, "1.4.2"), ("tilt", "rad", -0.125)],
    ),
    "float-time-extremes": (
        "a",
        [
            {0: "n", 2: -(2**63), "seq": 2**63 - 1, -3: 1764300000.5},
            {0: "big", 2: 2**63 - 1},
            {0: "tiny", 1: "m", 2: cbor2.CBORTag(4, [-18, 7])},
            {0: "huge", 2: 1e300},
        ],
        (2**63 - 1, 1764300000.5),
        [("n", None, -(2**63)), ("big", None, 2**63 - 1), ("tiny", "m", Decimal("7E-18")), ("huge", None, 1e300)],
    ),
}


@pytest.mark.parametrize("name", list(PYCOSE_PACKS))
def test_pycose_message_verifies_with_wire_and_decodes_to_what_was_put_in(name):
    device_id, pack, (seq, time), measurements = PYCOSE_PACKS[name]
    d = scalar("pycose-" + name)
    msg = Sign1Message(phdr={Algorithm: Es256, KID: device_id.encode()}, payload=cbor2.dumps(pack))
    msg.key = ec2_private(d)
    message = msg.encode()
    reading = wire.verify(message, lookup(public_key(d), device_id=device_id))
    assert (reading.device_id, reading.seq, reading.time) == (device_id, seq, time)
    assert type(reading.seq) is int and type(reading.time) is type(time)
    assert [(m.name, m.unit) for m in reading.measurements] == [(n, u) for n, u, _ in measurements]
    for m, (_, _, value) in zip(reading.measurements, measurements):
        assert_same_value(m.value, value)
    assert reading.message == message
    assert reading.payload == cbor2.dumps(pack)


@pytest.mark.parametrize("name", list(PYCOSE_PACKS))
def test_pycose_message_signed_by_another_key_fails_wire(name):
    device_id, pack, _, _ = PYCOSE_PACKS[name]
    msg = Sign1Message(phdr={Algorithm: Es256, KID: device_id.encode()}, payload=cbor2.dumps(pack))
    msg.key = ec2_private(scalar("intruder"))
    with pytest.raises(wire.WireError) as exc:
        wire.verify(msg.encode(), lookup(public_key(scalar("pycose-" + name))))
    assert exc.value.code == "bad_signature"
