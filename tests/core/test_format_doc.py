"""docs/FORMAT.md says what the node really sends.

The annotated example is regenerated from the firmware under MicroPython and
compared line by line; the CDDL is checked against node messages with pycddl,
an implementation of RFC 8610 nobody here wrote.
"""

import re
from pathlib import Path

import cbor2
import pycddl
import pytest

from govedge.core import wire
from govedge.tools.field import firmware
from govedge.tools.dev.annotate import annotate

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"

# the inputs the example in docs/FORMAT.md names
EXAMPLE_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
EXAMPLE_SCRIPT = """
import reading
m = [("temp", "Cel", (2153, -2)), ("hum", "%%RH", (4820, -2)), ("press", "Pa", 100812)]
print(reading.signed_reading(%d, "esp32-0007", 100000, 1764300000, m).hex())
print(reading.protected_header(b"esp32-0007").hex())
""" % EXAMPLE_KEY


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    mpy = firmware.compile_all(tmp_path_factory.mktemp("mpy"))
    proc = firmware.run_micropython(EXAMPLE_SCRIPT, path=[mpy[0].parent])
    assert proc.returncode == 0, proc.stderr.decode()
    message, protected = proc.stdout.decode().split()
    return bytes.fromhex(message), bytes.fromhex(protected)


def _doc_block(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(re.escape(marker) + r".*?\n```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"{DOC.name} has no block after {marker!r}"
    return m.group(1)


def _cddl() -> str:
    return re.search(r"```cddl\n(.*?)```", DOC.read_text(), re.S).group(1)


def _schema(root: str) -> pycddl.Schema:
    return pycddl.Schema(f"root = {root}\n" + _cddl())


def test_documented_example_is_what_the_firmware_sends(example):
    message, _ = example
    documented = _doc_block("<!-- example-reading").rstrip("\n")
    assert annotate(message) == documented, (
        "docs/FORMAT.md example differs from the firmware's output; the current one is:\n"
        + annotate(message)
    )
    assert len(message) == 158


def test_documented_example_verifies(example):
    message, _ = example
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(EXAMPLE_KEY, ec.SECP256R1()).public_key()
    r = wire.verify(message, lambda device: [key])
    assert (r.device_id, r.seq, r.time) == ("esp32-0007", 100000, 1764300000)
    assert [str(m.value) for m in r.measurements] == ["21.53", "48.20", "100812"]


def test_node_message_matches_the_cddl(example):
    message, protected = example
    body = cbor2.loads(message).value
    assert body[0] == protected
    _schema("reading-protected").validate_cbor(body[0])
    _schema("senml-pack").validate_cbor(body[2])
    # cddl-rs applies a .cbor control to every member of an array that holds two of
    # them, so the outer shape is checked with the embedded parts as plain bstr
    outer = _cddl().replace("bstr .cbor reading-protected", "bstr").replace("bstr .cbor senml-pack", "bstr")
    pycddl.Schema(outer).validate_cbor(message)


@pytest.mark.parametrize(
    "pack",
    [
        [{0: "temp", 2: 1}],  # no sequence number
        [{0: "temp", 2: 1, "seq": 1.5}],  # sequence number not an integer
        [{0: "temp", 2: 1, "seq": -1}],
        [{0: "temp", 2: 1, "seq": 1, -3: 5}],  # relative time
        [{1: "Cel", 2: 1, "seq": 1}],  # no name
        [],
        [{0: "t" * 65, 2: 1, "seq": 1}],  # name too long
    ],
)
def test_cddl_and_verifier_refuse_the_same_payloads(pack):
    payload = cbor2.dumps(pack)
    with pytest.raises(pycddl.ValidationError):
        _schema("senml-pack").validate_cbor(payload)
    with pytest.raises(wire.WireError):
        wire._senml(payload)


@pytest.mark.parametrize(
    "pack",
    [
        [{0: "temp", 2: 1, "seq": 2**63}],  # beyond what the stores hold
        [{0: "temp", 2: 2**63, "seq": 1}],  # integer beyond 64 bits signed
        [{0: "temp", 2: 1, "seq": 1, -3: 2**32}],  # a clock past 2106
        [{0: "temp", 2: cbor2.CBORTag(4, [19, 1]), "seq": 1}],  # exponent out of bounds
        [{0: "temp", 2: cbor2.CBORTag(4, [-19, 1]), "seq": 1}],
        [{0: "temp", 2: cbor2.CBORTag(4, [0, 2**53 + 1]), "seq": 1}],  # mantissa out of bounds
    ],
)
def test_verifier_refuses_what_the_cddl_bounds_and_cddl_rs_lets_pass(pack):
    # cddl-rs does not enforce a range past 2**63, inside a type choice of an optional map
    # member, or of a tagged array's items; the CDDL states the bounds and the verifier holds them
    with pytest.raises(wire.WireError):
        wire._senml(cbor2.dumps(pack))


def test_verifier_refuses_a_record_with_two_values():
    # the CDDL says "exactly one of v, vs, vb" as a group choice; cddl-rs does not
    # enforce group choices inside maps, so this rule is held by the verifier alone
    with pytest.raises(wire.WireError, match="exactly one value"):
        wire._senml(cbor2.dumps([{0: "temp", 2: 1, 3: "x", "seq": 1}]))


def _cddl_block(after: str) -> str:
    text = DOC.read_text()
    start = text.index(after)
    return re.search(r"```cddl\n(.*?)```", text[start:], re.S).group(1)


def test_gateway_batch_matches_the_documented_cddl(example):
    from cryptography.hazmat.primitives.asymmetric import ec

    from govedge.core import batch

    message, _ = example
    key = ec.generate_private_key(ec.SECP256R1())
    agg = {"device_id": "esp32-0007", "name": "temp", "unit": "Cel", "window_start": 1764300000,
           "window_end": 1764300060, "count": 1, "min": 21.53, "max": 21.53, "last": 21.53,
           "mean": 21.53, "stdev": 0.0, "first_seq": 100000, "last_seq": 100000}
    for mode, store_id in (("raw", None), ("aggregate", None), ("raw", "3f9c0a5e71d2b846")):
        cose, _root = batch.sign(key, "gw-muenster-01", 7, 1764300100, [message, message[:-1] + b"\x00"],
                                 [agg], mode, store_id)
        cddl = _cddl_block("## The batch")
        payload = cbor2.loads(cose).value[2]
        pycddl.Schema("root = batch\n" + cddl).validate_cbor(payload)
        pycddl.Schema("root = signed-batch\n" + cddl.replace("bstr .cbor batch", "bstr")).validate_cbor(cose)


def test_epoch_record_and_batch_head_match_the_documented_cddl(example):
    from cryptography.hazmat.primitives.asymmetric import ec

    from govedge.core import batch
    from govedge.core.epoch import Epoch, head_of, sign_epoch, verify_epoch
    from govedge.anchor import Receipt

    message, _ = example
    key = ec.generate_private_key(ec.SECP256R1())
    heads = []
    for seq, store_id in ((7, None), (8, "3f9c0a5e71d2b846")):  # a store from before store ids, then with one
        cose, _root = batch.sign(key, "gw-muenster-01", seq, 1764300100 + seq, [message], [], "raw", store_id)
        heads.append(head_of(batch.verify(cose, lambda g: [key.public_key()])))
    epoch = Epoch("gw-muenster-01", 3, tuple(heads), "3f9c0a5e71d2b846")
    receipt = Receipt("evm", "eip155:31337", epoch.root, "0x" + "5e" * 32, block=812, block_time=1764300200)
    record = sign_epoch(key, epoch, 7, 8, receipt)
    cddl = _cddl_block("## The batch head and the epoch record")
    for head in heads:
        pycddl.Schema("root = batch-head\n" + cddl).validate_cbor(head)
    pycddl.Schema("root = epoch-record\n" + cddl).validate_cbor(cbor2.loads(record).value[2])
    pycddl.Schema("root = signed-epoch\n" + cddl.replace("bstr .cbor epoch-record", "bstr")).validate_cbor(record)
    assert verify_epoch(record, lambda g: [key.public_key()]).receipt == receipt


def test_the_hubs_confirmations_match_the_documented_cddl():
    from govedge.core import confirm

    cddl = _cddl_block("## Acknowledgements between gateway and hub")
    for c in (confirm.Confirmation("batch", "3f9c0a5e71d2b846", 4711, "stored"),
              confirm.Confirmation("epoch", "3f9c0a5e71d2b846", 12, "duplicate"),
              confirm.Confirmation("batch", None, 3, "rejected", "conflicting_batch"),
              confirm.Confirmation("batch", None, 3, "waiting", "unknown_gateway")):
        pycddl.Schema("root = confirmation\n" + cddl).validate_cbor(confirm.dumps(c))


def test_the_gateways_status_record_matches_the_documented_cddl():
    from cryptography.hazmat.primitives.asymmetric import ec

    from govedge.core import heartbeat

    key = ec.generate_private_key(ec.SECP256R1())
    cddl = _cddl_block("## The gateway's status record")
    busy = heartbeat.Heartbeat(
        "gw-muenster-01", "3f9c0a5e71d2b846", 3 << 32 | 17, 1764300100, 60, "0.1.0", 12, 3, 1764300000, 1,
        1764299500, "rpc https://rpc.example/… timed out", 1_234_567_890, True, False,
        (heartbeat.DeviceSeen("esp32-0007", 1764300095, 100000, 1764300094),
         heartbeat.DeviceSeen("esp32-0008", None, 41, None)), 2)
    idle = heartbeat.Heartbeat("gw-muenster-01", "3f9c0a5e71d2b846", 1 << 32 | 1, 1764300100, 60, "0.1.0", 0, 0,
                               None, 0, None, None, 0, False, None, (), 0)
    for h in (busy, idle):
        signed = heartbeat.sign(key, h)
        pycddl.Schema("root = gateway-status\n" + cddl).validate_cbor(cbor2.loads(signed).value[2])
        pycddl.Schema("root = signed-status\n" + cddl.replace("bstr .cbor gateway-status", "bstr")
                      ).validate_cbor(signed)
        assert heartbeat.verify(signed, lambda g: [key.public_key()]).state() == h.state()
    with pytest.raises(pycddl.ValidationError):  # what the verifier refuses, the CDDL refuses too
        pycddl.Schema("root = gateway-status\n" + cddl).validate_cbor(
            cbor2.dumps({**cbor2.loads(cbor2.loads(heartbeat.sign(key, idle)).value[2]), "refusing": 0}))
