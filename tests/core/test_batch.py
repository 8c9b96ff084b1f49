"""The gateway's batch: what the gateway signs, the hub can check link by link."""

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import batch, merkle, wire
from support import cose_sign1, private_key, scalar, senml

DEVICE_KEY = private_key(scalar("batch-device"))
GATEWAY_KEY = ec.generate_private_key(ec.SECP256R1())


def devices(device_id):
    return [DEVICE_KEY.public_key()] if device_id == "sensor-1" else []


def gateways(gateway_id):
    return [GATEWAY_KEY.public_key()] if gateway_id == "gw-1" else []


MESSAGES = [cose_sign1(DEVICE_KEY, senml(seq=i)) for i in range(5)]


def _signed(messages=MESSAGES, mode="raw", key=GATEWAY_KEY, gateway="gw-1"):
    return batch.sign(key, gateway, 3, 1764300100, messages, [], mode)[0]


def test_batch_verifies_with_every_device_signature_and_the_root():
    b = batch.verify(_signed(), gateways, devices)
    assert (b.id, b.size, b.mode) == ("gw-1/3", 5, "raw")
    assert b.root == merkle.root([merkle.leaf_hash(m) for m in MESSAGES])
    assert [wire.decode_unverified(m).seq for m in b.messages] == [0, 1, 2, 3, 4]


def test_every_reading_has_an_inclusion_path_to_the_batch_root():
    b = batch.verify(_signed(), gateways, devices)
    for i, m in enumerate(b.messages):
        path = merkle.inclusion_proof(i, list(b.leaves))
        assert merkle.verify_inclusion(merkle.leaf_hash(m), i, b.size, path, b.root)


def test_aggregate_mode_carries_leaf_hashes_whose_root_checks():
    b = batch.verify(_signed(mode="aggregate"), gateways, devices)
    assert b.messages == () and len(b.leaves) == 5


def _resigned(mutate):
    """The batch payload changed by mutate and signed again by the gateway: only the content is wrong."""
    cose = _signed()
    body = cbor2.loads(cbor2.loads(cose).value[2])
    mutate(body)
    payload = cbor2.dumps(body, canonical=True)
    protected = cbor2.dumps({1: -7, 4: b"gw-1"})
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(GATEWAY_KEY.sign(wire.sig_structure(protected, payload), ec.ECDSA(hashes.SHA256())))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))


@pytest.mark.parametrize(
    "mutate, code, words",
    [
        (lambda b: b["messages"].__setitem__(2, b["messages"][2][:-1] + b"\x00"), "bad_root", "Merkle root"),
        (lambda b: b.__setitem__("root", bytes(32)), "bad_root", "Merkle root"),
        (lambda b: b.__setitem__("size", 4), "malformed_batch", "says 4 messages"),
        (lambda b: b.__setitem__("gateway", "gw-2"), "malformed_batch", "signed by 'gw-1'"),
        (lambda b: b.__delitem__("seq"), "malformed_batch", "no 'seq'"),
    ],
)
def test_tampered_batch_is_refused_naming_the_link(mutate, code, words):
    with pytest.raises(wire.WireError) as exc:
        batch.verify(_resigned(mutate), gateways, devices)
    assert exc.value.code == code and words in exc.value.reason


def test_a_device_message_the_gateway_never_got_from_the_device_is_named():
    forged = cose_sign1(private_key(scalar("someone-else")), senml(seq=9))
    with pytest.raises(wire.WireError) as exc:
        batch.verify(_signed(MESSAGES + [forged]), gateways, devices)
    assert exc.value.code == "bad_signature" and "message 5" in exc.value.reason


def test_batch_of_another_key_or_gateway_is_refused():
    with pytest.raises(wire.WireError, match="does not verify with the key of gateway 'gw-1'"):
        batch.verify(_signed(key=ec.generate_private_key(ec.SECP256R1())), gateways, devices)
    with pytest.raises(wire.WireError, match="gateway 'gw-9' is unknown"):
        batch.verify(_signed(gateway="gw-9"), gateways, devices)
    cose = bytearray(_signed())
    cose[-1] ^= 1
    with pytest.raises(wire.WireError, match="batch signature does not verify"):
        batch.verify(bytes(cose), gateways, devices)


def test_a_batch_names_its_gateway_store_and_a_batch_without_one_reads_as_before():
    with_store = batch.verify(batch.sign(GATEWAY_KEY, "gw-1", 3, 1764300100, MESSAGES, [], "raw",
                                         "0123456789abcdef")[0], gateways, devices)
    assert (with_store.id, with_store.store_id) == ("gw-1/0123456789abcdef/3", "0123456789abcdef")
    older = batch.verify(_signed(), gateways, devices)  # a gateway from before store ids
    assert (older.id, older.store_id) == ("gw-1/3", None)


@pytest.mark.parametrize("store", ["", "0123456789ABCDEF", "0123456789abcde", 7, b"\x01" * 8])
def test_a_batch_store_that_is_not_16_lowercase_hex_digits_is_refused_by_name(store):
    body = {"v": 1, "gateway": "gw-1", "seq": 3, "created": 1764300100, "mode": "raw", "store": store,
            "root": merkle.root([]), "size": 0, "aggregates": [], "messages": []}
    from govedge.core import cose

    with pytest.raises(wire.WireError) as exc:
        batch.verify(cose.sign1(GATEWAY_KEY, "gw-1", cbor2.dumps(body, canonical=True)), gateways)
    assert (exc.value.code, exc.value.reason) == ("malformed_batch", "batch store is not 16 lowercase hex digits")
    with pytest.raises(ValueError):
        batch.sign(GATEWAY_KEY, "gw-1", 3, 1764300100, [], [], "raw", store if isinstance(store, str) else "x")
