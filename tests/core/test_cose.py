"""govedge.core.cose: the one COSE_Sign1 (RFC 9052) of readings, batches and epoch records.

What it signs verifies with pycose and python-ecdsa; what pycose signs verifies here; every way an
envelope can be wrong is refused with the code and reason the signer's format names.
"""

from __future__ import annotations

import hashlib

import cbor2
import ecdsa
import pytest
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from govedge.anchor import Receipt
from govedge.core import batch, cose
from govedge.core.epoch import Epoch, sign_epoch
from support import cose_sign1, private_key, public_key, pycose_with_cbor2_6, scalar, sec1

D = scalar("cose-gateway")
KEY = private_key(D)
SIGNER = cose.Signer("unknown_gateway", "gateway {kid!r} is unknown to the registry",
                     "thing signature does not verify with the key of gateway {kid!r}")
PAYLOAD = cbor2.dumps({"v": 1, "what": "anything the format puts here"})


def keys_of(kid: str):
    return [public_key(D)] if kid == "gw-cose-01" else []


def verify(data: bytes, keys=keys_of):
    return cose.verify(data, keys, SIGNER, 4096, "thing")


def refused(data: bytes, keys=keys_of) -> tuple[str, str]:
    with pytest.raises(cose.WireError) as err:
        verify(data, keys)
    return err.value.code, err.value.reason


def test_signed_envelope_verifies_and_gives_back_kid_and_payload():
    signed = cose.sign1(KEY, "gw-cose-01", PAYLOAD)
    env = verify(signed)
    assert (env.kid, env.payload, env.message) == ("gw-cose-01", PAYLOAD, signed)


def test_signed_envelope_has_the_profile_bytes():
    item = cbor2.loads(cose.sign1(KEY, "gw-cose-01", PAYLOAD))
    assert item.tag == 18
    protected, unprotected, payload, signature = item.value
    assert protected == bytes.fromhex("a2012604") + bytes([0x40 + 10]) + b"gw-cose-01"  # {1: -7, 4: h'gw-cose-01'}
    assert (unprotected, payload, len(signature)) == ({}, PAYLOAD, 64)


def test_signature_verifies_with_python_ecdsa_over_an_independent_sig_structure():
    _, _, payload, signature = cbor2.loads(cose.sign1(KEY, "gw-cose-01", PAYLOAD)).value
    protected = cbor2.dumps({1: -7, 4: b"gw-cose-01"})
    vk = ecdsa.VerifyingKey.from_string(sec1(D), curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    assert vk.verify(signature, cbor2.dumps(["Signature1", protected, b"", payload]))


def test_pycose_verifies_what_cose_signs():
    with pycose_with_cbor2_6():
        msg = Sign1Message.decode(cose.sign1(KEY, "gw-cose-01", PAYLOAD))
    assert msg.phdr == {Algorithm: Es256, KID: b"gw-cose-01"} and msg.payload == PAYLOAD
    point = sec1(D)
    msg.key = EC2Key(crv=P256, x=point[1:33], y=point[33:])
    assert msg.verify_signature() is True


def test_cose_verifies_what_pycose_signs():
    msg = Sign1Message(phdr={Algorithm: Es256, KID: b"gw-cose-01"}, payload=PAYLOAD)
    msg.key = EC2Key(crv=P256, d=D.to_bytes(32, "big"))
    assert verify(msg.encode()).payload == PAYLOAD


def test_batches_and_epoch_records_are_this_envelope():
    b, _root = batch.sign(KEY, "gw-cose-01", 4, 1_764_400_000, [b"m"], [])
    epoch = Epoch("gw-cose-01", 0, (b"head",))
    record = sign_epoch(KEY, epoch, 4, 4, Receipt("rest", "test", epoch.root, "tx"))
    for data in (b, record):
        assert verify(data).kid == "gw-cose-01"


def test_unknown_signer_is_refused_by_its_signer_words():
    signed = cose.sign1(KEY, "gw-stranger", PAYLOAD)
    assert refused(signed) == ("unknown_gateway", "gateway 'gw-stranger' is unknown to the registry")

    def raises_key_error(kid):
        raise KeyError(kid)

    assert refused(signed, raises_key_error)[0] == "unknown_gateway"


def test_signature_of_another_key_is_refused():
    signed = cose.sign1(private_key(scalar("someone else")), "gw-cose-01", PAYLOAD)
    assert refused(signed) == ("bad_signature", "thing signature does not verify with the key of gateway 'gw-cose-01'")


def test_a_changed_payload_is_refused():
    protected, _, payload, signature = cbor2.loads(cose.sign1(KEY, "gw-cose-01", PAYLOAD)).value
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload + b"\x00", signature]))
    assert refused(forged)[0] in ("bad_signature", "not_cbor")
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, cbor2.dumps({"v": 2}), signature]))
    assert refused(forged)[0] == "bad_signature"


def test_a_signature_with_r_or_s_out_of_range_is_refused():
    for signature in (bytes(64), b"\xff" * 64):
        assert refused(cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01"},
                                  signature=signature))[0] == "bad_signature"


@pytest.mark.parametrize("make, code", [
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01"}, tag=None), "not_cose_sign1"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01"}, tag=98), "not_cose_sign1"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01"}, unprotected={4: b"x"}),
     "malformed_cose"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01"}, signature=b"\x01" * 63),
     "malformed_cose"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -35, 4: b"gw-cose-01"}), "wrong_algorithm"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7}), "missing_field"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw cose"}), "bad_header"),
    (lambda: cose_sign1(KEY, PAYLOAD, protected={1: -7, 4: b"gw-cose-01", 3: 0}), "bad_header"),
    (lambda: b"\xd2\x84" + b"\x40" * 3, "not_cbor"),
    (lambda: b"", "not_cbor"),
    (lambda: cose.sign1(KEY, "gw-cose-01", b"\x00" * 5000), "too_large"),
])
def test_a_wrong_envelope_is_refused_with_its_code(make, code):
    assert refused(make())[0] == code


def test_an_envelope_in_a_second_encoding_is_refused():
    protected, _, payload, signature = cbor2.loads(cose.sign1(KEY, "gw-cose-01", PAYLOAD)).value
    # the same array with the payload's length in a longer head than needed
    good = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    at = good.index(payload) - 2
    assert good[at:at + 2] == bytes([0x58, len(payload)])
    longer = good[:at] + bytes([0x59, 0, len(payload)]) + good[at + 2:]
    assert refused(longer) == ("malformed_cose", "COSE_Sign1 envelope is not in deterministic CBOR encoding")
