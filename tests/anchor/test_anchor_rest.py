"""REST anchoring against a real observer over HTTP.

govedge.anchor.rest talks to tests/support/rest_observer.py, an observer built from
docs/ANCHOR-REST.md alone, on a loopback port: round trips, retries, every way
the observer or the network between can fail, and observers that lie. The
document's examples are replayed to the observer and must be its answers; the
gateway's signature is also checked with python-ecdsa over canonical JSON made
without rfc8785.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import re
import time
from pathlib import Path

import ecdsa
import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.anchor import AnchorError, Receipt
from govedge.anchor.rest import (
    AnchorUnreachable,
    RestAnchor,
    hash_creation,
    key_id,
    parse_date,
    signature_valid,
    signing_input,
    transaction_id,
)
from support.rest_observer import Observer, thumbprint
from support import private_key, scalar

DOC = Path(__file__).resolve().parents[2] / "docs" / "ANCHOR-REST.md"
GATEWAY = "gw-0017"
TIMEOUT = 2.0


def root_of(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def observer():
    obs = Observer().start()
    yield obs
    obs.stop()


@pytest.fixture
def gateway_key() -> ec.EllipticCurvePrivateKey:
    return private_key(scalar("rest anchoring: gateway gw-0017"))


@pytest.fixture
def anchor(observer, gateway_key) -> RestAnchor:
    observer.register(GATEWAY, gateway_key.public_key())
    return RestAnchor(observer.url, creator=GATEWAY, key=gateway_key, timeout=TIMEOUT)


@pytest.fixture
def auditor(observer, gateway_key) -> RestAnchor:
    return RestAnchor(observer.url, creator_keys={GATEWAY: [gateway_key.public_key()]}, timeout=TIMEOUT)


def raised(call, *args) -> AnchorError:
    with pytest.raises(AnchorError) as e:
        call(*args)
    return e.value


# --- round trips ---


def test_submit_confirm_and_lookup_round_trip(observer, anchor, auditor):
    root = root_of("epoch 1")
    pending = anchor.submit(root, 1)
    tx = pending.details["transaction"]
    assert (pending.backend, pending.chain, pending.root, pending.block) == ("rest", observer.chain, root, None)
    assert pending.reference == hashlib.sha256(rfc8785.dumps(tx)).hexdigest()
    assert (tx["hash"], tx["creator"], pending.details["epoch"]) == (root.hex(), GATEWAY, 1)
    assert pending.details["signature_checked"]

    assert anchor.confirm(pending) is None
    assert auditor.lookup(root) is None, "a transaction not in a block yet is not anchored"

    block = observer.make_block()
    confirmed = anchor.confirm(pending)
    assert (confirmed.reference, confirmed.block, confirmed.details["epoch"]) == (pending.reference, block, 1)
    assert abs(confirmed.block_time - time.time()) < 5

    found = auditor.lookup(root)
    assert (found.reference, found.block, found.block_time) == (confirmed.reference, block, confirmed.block_time)
    assert found.details["transaction"] == tx and found.details["signature_checked"]
    assert Receipt.from_json(json.loads(json.dumps(confirmed.to_json()))) == confirmed


def test_the_posted_transaction_verifies_with_python_ecdsa_over_independent_canonical_json(
        observer, anchor, gateway_key):
    anchor.submit(root_of("epoch 2"), 2)
    tx = json.loads(observer.received[-1])
    unsigned = {k: v for k, v in tx.items() if k != "signature"}
    # for an object of ASCII strings, RFC 8785 is sorted names and no whitespace
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical == rfc8785.dumps(unsigned) == signing_input(tx)
    point = gateway_key.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
    vk = ecdsa.VerifyingKey.from_string(point, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    signature = b64url_decode(tx["signature"])
    assert len(signature) == 64 and vk.verify(signature, canonical)
    with pytest.raises(ecdsa.BadSignatureError):
        vk.verify(signature, canonical.replace(b"epoch", b"EPOCH") + b" ")
    assert tx["keyId"] == thumbprint(gateway_key.public_key()) == key_id(gateway_key.public_key())


def test_resubmitting_a_root_returns_its_first_transaction(observer, anchor):
    root = root_of("epoch 3")
    first = anchor.submit(root, 3)
    again = anchor.submit(root, 3)
    assert observer.received[0] != observer.received[1], "each submission is signed anew"
    assert again.reference == first.reference and again.details["transaction"] == first.details["transaction"]
    assert len(observer.records) == 1

    block = observer.make_block()
    after_block = anchor.submit(root, 3)
    assert (after_block.reference, after_block.block) == (first.reference, block)


def test_an_answer_lost_on_the_way_back_is_posted_again_into_the_same_transaction(observer, anchor):
    root = root_of("epoch 4")
    anchor.info()
    observer.fail("lose_answer")
    assert raised(anchor.submit, root, 4).code == "unreachable"
    assert len(observer.records) == 1, "the observer carried the request out"
    receipt = anchor.submit(root, 4)
    assert receipt.reference == next(iter(observer.records))


def test_a_root_is_pending_until_the_observer_makes_its_next_block(gateway_key):
    observer = Observer(block_interval=0.2).start()
    try:
        observer.register(GATEWAY, gateway_key.public_key())
        anchor = RestAnchor(observer.url, creator=GATEWAY, key=gateway_key, timeout=TIMEOUT)
        pending = anchor.submit(root_of("epoch 5"), 5)
        deadline = time.monotonic() + 5
        while (confirmed := anchor.confirm(pending)) is None:
            assert time.monotonic() < deadline, "no block within 5 s although the observer makes one every 0.2 s"
            time.sleep(0.05)
        assert confirmed.block >= 1 and confirmed.reference == pending.reference
    finally:
        observer.stop()


# --- refusals: the observer says no, and why ---


def test_a_key_not_registered_for_the_gateway_is_rejected_with_the_observers_reason(observer, anchor):
    other = private_key(scalar("rest anchoring: a key nobody registered"))
    e = raised(RestAnchor(observer.url, creator=GATEWAY, key=other, timeout=TIMEOUT).submit, root_of("x"), 1)
    assert e.code == "rejected"
    assert "403 unknown_key" in e.reason and key_id(other.public_key()) in e.reason and GATEWAY in e.reason
    assert not observer.records


def test_a_transaction_altered_in_transit_is_rejected_as_a_bad_signature(observer, anchor):
    anchor.info()
    observer.fail("alter")
    e = raised(anchor.submit, root_of("epoch 6"), 6)
    assert e.code == "rejected" and "403 bad_signature" in e.reason and GATEWAY in e.reason
    assert not observer.records


def test_an_identity_the_chain_does_not_know_is_rejected(observer, gateway_key):
    e = raised(RestAnchor(observer.url, creator="gw-nobody", key=gateway_key, timeout=TIMEOUT).submit,
               root_of("x"), 1)
    assert e.code == "rejected" and "403 unknown_identity" in e.reason and "'gw-nobody'" in e.reason


def test_a_gateway_clock_far_from_the_observers_is_rejected(gateway_key):
    observer = Observer(clock=lambda: time.time() - 3600).start()
    try:
        observer.register(GATEWAY, gateway_key.public_key())
        e = raised(RestAnchor(observer.url, creator=GATEWAY, key=gateway_key, timeout=TIMEOUT).submit,
                   root_of("x"), 1)
        assert e.code == "rejected" and "400 date_out_of_range" in e.reason and "ahead of" in e.reason
    finally:
        observer.stop()


def test_a_root_another_gateway_anchored_first(observer, anchor, gateway_key):
    rival_key = private_key(scalar("rest anchoring: gateway gw-0018"))
    observer.register("gw-0018", rival_key.public_key())
    root = root_of("epoch 7")
    theirs = RestAnchor(observer.url, creator="gw-0018", key=rival_key, timeout=TIMEOUT).submit(root, 7)
    e = raised(anchor.submit, root, 7)
    assert e.code == "rejected" and "409 hash_taken" in e.reason and "'gw-0018'" in e.reason

    observer.make_block()
    auditor = RestAnchor(observer.url, creator_keys={GATEWAY: [gateway_key.public_key()]}, timeout=TIMEOUT)
    e = raised(auditor.lookup, root)
    assert e.code == "mismatch" and "anchored by 'gw-0018'" in e.reason
    assert RestAnchor(observer.url, timeout=TIMEOUT).lookup(root).reference == theirs.reference


def test_a_pending_transaction_the_observer_dropped_is_rejected_and_can_be_submitted_again(observer, anchor):
    root = root_of("epoch 8")
    pending = anchor.submit(root, 8)
    observer.drop_pending()
    e = raised(anchor.confirm, pending)
    assert e.code == "rejected" and "submit the root again" in e.reason and pending.reference in e.reason
    again = anchor.submit(root, 8)
    observer.make_block()
    assert anchor.confirm(again).confirmed


def test_an_observer_of_another_api_version_is_refused(gateway_key):
    observer = Observer(version="2.0.0").start()
    try:
        e = raised(RestAnchor(observer.url, timeout=TIMEOUT).lookup, root_of("x"))
        assert e.code == "rejected" and "'2.0.0'" in e.reason
    finally:
        observer.stop()


def test_a_misconfigured_backend_names_what_is_wrong(tmp_path, gateway_key):
    p384 = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
    for kwargs, words in (
        ({"url": "observer.example/govchain/v1"}, "https:// (or http://) URL"),
        ({"url": "https://observer.example/v1?x=1"}, "no query"),
        ({"creator": "gw 17", "key": gateway_key}, "creator 'gw 17'"),
        ({"key": gateway_key}, "key given without creator"),
        ({"creator": GATEWAY, "key": p384}, "P-256 (secp256r1) private key"),
        ({"creator_keys": {GATEWAY: [p384.public_key()]}}, "creator_keys['gw-0017']: P-256"),
        ({"ca_file": tmp_path / "missing.pem"}, "missing.pem': no such file"),
        ({"ca_file": tmp_path / "not-a-ca.pem"}, "not-a-ca.pem': not a PEM file"),
        ({"timeout": 0}, "timeout 0"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            RestAnchor(**{"url": "https://observer.example/govchain/v1", **kwargs})
    with pytest.raises(ValueError, match="submitting needs the gateway's creator id and private key"):
        RestAnchor("https://observer.example/govchain/v1").submit(root_of("x"), 1)
    with pytest.raises(ValueError, match="root: 32 bytes"):
        RestAnchor("https://observer.example/govchain/v1").lookup(b"\x01" * 31)


# --- an observer out of reach ---


def test_a_stopped_observer_is_unreachable_and_keeps_its_transactions_over_a_restart(observer, anchor):
    pending = anchor.submit(root_of("epoch 9"), 9)
    url = observer.url
    observer.stop()
    for call, arg in ((anchor.confirm, pending), (anchor.lookup, pending.root)):
        e = raised(call, arg)
        assert e.code == "unreachable" and "Connection refused" in e.reason and e.retry_after is None
    assert raised(anchor.submit, root_of("epoch 10"), 10).code == "unreachable"

    observer.start()
    assert observer.url == url
    block = observer.make_block()
    assert anchor.confirm(pending).block == block
    assert anchor.submit(root_of("epoch 10"), 10).reference in observer.records


@pytest.mark.parametrize("kind, status", [("unavailable", 503), ("rate_limited", 429)])
def test_503_and_429_are_unreachable_with_the_observers_retry_after(observer, anchor, kind, status):
    anchor.info()
    observer.fail(kind, retry_after=17)
    e = raised(anchor.submit, root_of("epoch 11"), 11)
    assert isinstance(e, AnchorUnreachable) and e.code == "unreachable"
    assert e.retry_after == 17 and "retry after 17 s" in e.reason and f"answered {status} ({kind}:" in e.reason

    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    observer.fail(kind, retry_after=later)
    assert 115 <= raised(anchor.lookup, root_of("epoch 11")).retry_after <= 121

    observer.fail(kind)
    assert raised(anchor.lookup, root_of("epoch 11")).retry_after is None
    assert anchor.submit(root_of("epoch 11"), 11).reference in observer.records


def test_a_dropped_connection_or_a_silent_observer_is_unreachable(observer, gateway_key):
    observer.register(GATEWAY, gateway_key.public_key())
    anchor = RestAnchor(observer.url, creator=GATEWAY, key=gateway_key, timeout=0.5)
    anchor.info()
    observer.fail("drop")
    e = raised(anchor.submit, root_of("epoch 12"), 12)
    assert e.code == "unreachable" and "connection broke" in e.reason

    observer.fail("hang")
    started = time.monotonic()
    e = raised(anchor.lookup, root_of("epoch 12"))
    assert e.code == "unreachable" and "no answer within 0.5 s" in e.reason
    assert time.monotonic() - started < 2
    assert anchor.submit(root_of("epoch 12"), 12).reference in observer.records


def test_a_redirect_is_rejected_not_followed(observer, anchor):
    anchor.info()
    observer.fail("redirect")
    e = raised(anchor.submit, root_of("epoch 13"), 13)
    assert e.code == "rejected" and "redirected (301) to 'https://elsewhere.example/govchain/v1/transactions'" \
        in e.reason
    assert not observer.records


def test_lookup_of_a_root_nobody_anchored_is_none(anchor, auditor):
    assert anchor.lookup(root_of("never anchored")) is None
    assert auditor.lookup(root_of("never anchored")) is None


# --- an observer that lies ---


def test_an_observer_answering_with_another_hash_is_a_mismatch(observer, anchor, auditor):
    root = root_of("epoch 13")
    pending = anchor.submit(root, 13)
    observer.make_block()
    observer.tamper = "hash"
    for call, arg in ((anchor.confirm, pending), (auditor.lookup, root),
                      (RestAnchor(observer.url, timeout=TIMEOUT).lookup, root), (anchor.submit, root_of("e14"))):
        e = raised(call, *([arg, 14] if call == anchor.submit else [arg]))
        assert e.code == "mismatch" and "observer answered with hash" in e.reason


def test_a_transaction_whose_signature_does_not_verify_is_a_mismatch(observer, anchor, auditor):
    root = root_of("epoch 15")
    pending = anchor.submit(root, 15)
    observer.make_block()
    observer.tamper = "signature"
    e = raised(auditor.lookup, root)
    assert e.code == "mismatch" and "does not verify with key" in e.reason and f"of '{GATEWAY}'" in e.reason
    # the gateway holds the transaction id, and the altered transaction has another
    e = raised(anchor.confirm, pending)
    assert e.code == "mismatch" and f"not {pending.reference}" in e.reason
    # without the gateway's key an auditor learns only that the root is on the chain
    unchecked = RestAnchor(observer.url, timeout=TIMEOUT).lookup(root)
    assert unchecked.confirmed and unchecked.details["signature_checked"] is False


# --- TLS ---


@pytest.fixture
def tls_observer(tmp_path):
    from support.nodes import make_ca_and_server_cert

    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    observer = Observer(tls=(str(cert), str(key))).start()
    observer.ca_file = ca
    yield observer
    observer.stop()


def test_over_tls_the_observer_is_trusted_through_the_configured_ca_file(tls_observer, gateway_key):
    assert tls_observer.url.startswith("https://")
    tls_observer.register(GATEWAY, gateway_key.public_key())
    anchor = RestAnchor(tls_observer.url, creator=GATEWAY, key=gateway_key, ca_file=tls_observer.ca_file,
                        timeout=TIMEOUT)
    pending = anchor.submit(root_of("epoch 16"), 16)
    tls_observer.make_block()
    assert anchor.confirm(pending).confirmed

    e = raised(RestAnchor(tls_observer.url, creator=GATEWAY, key=gateway_key, timeout=TIMEOUT).lookup,
               root_of("epoch 16"))
    assert e.code == "unreachable" and "TLS certificate is not trusted" in e.reason


# --- the conformance observer refuses what the document says it refuses ---


def _send(observer: Observer, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", observer.port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.headers), json.loads(answer.read())
    finally:
        connection.close()


def _signed(key, **changes) -> dict:
    tx = hash_creation(root_of("form"), GATEWAY, key, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tx.update(changes)
    return tx


MALFORMED = {
    "not JSON": (b"{'hash': 1}", 400, "malformed"),
    "an array": (b"[]", 400, "malformed"),
    "a member missing": (lambda k: {m: v for m, v in _signed(k).items() if m != "date"}, 400, "malformed"),
    "an unknown member": (lambda k: {**_signed(k), "note": "x"}, 400, "malformed"),
    "a member twice": (lambda k: json.dumps(_signed(k))[:-1].encode() + b', "hash": "00"}', 400, "malformed"),
    "a number for a string": (lambda k: _signed(k, date=1764300000), 400, "malformed"),
    "another type": (lambda k: _signed(k, type="HashDeletion"), 400, "malformed"),
    "a date with an offset": (lambda k: _signed(k, date="2025-11-28T04:20:00+01:00"), 400, "malformed"),
    "a date with a fraction": (lambda k: _signed(k, date="2025-11-28T03:20:00.5Z"), 400, "malformed"),
    "a padded signature": (lambda k: {**(tx := _signed(k)), "signature": tx["signature"] + "=="}, 400, "malformed"),
    "a DER signature": (lambda k: _signed(k, signature=base64.urlsafe_b64encode(
        k.sign(b"x", ec.ECDSA(hashes.SHA256()))).rstrip(b"=").decode()), 400, "malformed"),
    "a keyId that is no thumbprint": (lambda k: _signed(k, keyId="gw-0017#1"), 400, "malformed"),
    "another hash algorithm": (lambda k: _signed(k, algorithm="SHA-512"), 400, "unsupported_algorithm"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_the_observer_refuses_a_malformed_transaction(observer, anchor, gateway_key, case):
    body, status, error = MALFORMED[case]
    if callable(body):
        body = body(gateway_key)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    got = _send(observer, "POST", "/govchain/v1/transactions", body, {"Content-Type": "application/json"})
    assert (got[0], got[2]["error"]) == (status, error), got
    assert got[2]["message"] and not observer.records


def test_the_observer_refuses_other_media_sizes_methods_and_paths(observer, anchor, gateway_key):
    body = json.dumps(_signed(gateway_key)).encode()
    assert _send(observer, "POST", "/govchain/v1/transactions", body, {"Content-Type": "text/plain"})[0] == 415
    big = json.dumps({**_signed(gateway_key), "pad": "x" * 5000}).encode()
    assert _send(observer, "POST", "/govchain/v1/transactions", big,
                 {"Content-Type": "application/json"})[2]["error"] == "payload_too_large"
    status, headers, answer = _send(observer, "GET", "/govchain/v1/transactions")
    assert (status, headers["Allow"], answer["error"]) == (405, "POST", "method_not_allowed")
    assert _send(observer, "GET", "/govchain/v1/hashes/ABC")[2]["error"] == "malformed"
    assert _send(observer, "GET", "/govchain/v1/elsewhere")[0:3:2] == (404, {
        "error": "not_found", "message": "no such resource: /govchain/v1/elsewhere"})


def test_either_s_of_a_signature_is_accepted(observer, anchor, gateway_key):
    tx = _signed(gateway_key)
    raw = b64url_decode(tx["signature"])
    high_s = ecdsa.NIST256p.order - int.from_bytes(raw[32:], "big")
    tx["signature"] = base64.urlsafe_b64encode(raw[:32] + high_s.to_bytes(32, "big")).rstrip(b"=").decode()
    assert signature_valid(tx, gateway_key.public_key())
    status, _, answer = _send(observer, "POST", "/govchain/v1/transactions", json.dumps(tx).encode(),
                              {"Content-Type": "application/json"})
    assert status == 202 and answer["id"] == transaction_id(tx)


# --- docs/ANCHOR-REST.md: every example is what the client and the observer do ---

_MARKED = re.compile(r"<!-- (example|exchange): ([^>]+?) -->\n```(\w+)\n(.*?)```", re.S)
EXAMPLE_DATE = "2025-11-28T03:20:00Z"
EXAMPLE_CHAIN, EXAMPLE_VERSION, EXAMPLE_HEIGHT = "govchain-nrw", "1.0.0", 1843020


def _doc_blocks() -> dict[tuple[str, str], str]:
    text = DOC.read_text()
    blocks = {(kind, name): body for kind, name, _, body in _MARKED.findall(text)}
    fences = re.findall(r"```(\w+)\n", text)
    assert len(_MARKED.findall(text)) == len(fences) == len(blocks), (
        "every fenced block in docs/ANCHOR-REST.md with a language needs its own <!-- example: ... --> "
        "or <!-- exchange: ... --> marker, so that a test checks it")
    return blocks


def _exchanges() -> list[tuple[str, str, str]]:
    """(name, request, response) in the document's order."""
    blocks = _doc_blocks()
    names = list(dict.fromkeys(n.rsplit(" ", 1)[0] for k, n in blocks if k == "exchange"))
    return [(n, blocks["exchange", f"{n} request"], blocks["exchange", f"{n} response"]) for n in names]


def _http(text: str) -> tuple[str, dict, bytes]:
    head, _, body = text.partition("\n\n")
    first, *lines = head.splitlines()
    return first, dict(line.split(": ", 1) for line in lines), body.encode()


def _jwk_key(jwk: dict) -> ec.EllipticCurvePrivateKey:
    key = private_key(int.from_bytes(b64url_decode(jwk["d"]), "big"))
    n = key.public_key().public_numbers()
    assert (b64url_decode(jwk["x"]), b64url_decode(jwk["y"])) == (n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big"))
    return key


def _example_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    blocks = _doc_blocks()
    return {c: _jwk_key(json.loads(blocks["example", f"key {c}"])) for c in ("gw-demo-01", "gw-demo-02")}


# what the observer is made to do before an exchange of the document is replayed
_BEFORE = {
    "hash-confirmed": lambda obs, clock: (clock.__setitem__(0, clock[0] + 3), obs.make_block()),
    "rate-limited": lambda obs, clock: obs.fail("rate_limited", retry_after=30),
    "unavailable": lambda obs, clock: obs.fail("unavailable", retry_after=10),
}
EXPECTED_EXAMPLES = {
    ("example", "key gw-demo-01"), ("example", "key gw-demo-02"), ("example", "signing-input"),
    ("example", "client"),
} | {("exchange", f"{n} {part}") for part in ("request", "response") for n in (
    "info", "create", "create-again", "hash-confirmed", "transaction", "malformed", "date-out-of-range",
    "unknown-identity", "unknown-key", "bad-signature", "hash-taken", "not-found", "rate-limited", "unavailable")}


def test_every_example_in_the_document_is_one_these_tests_check():
    assert set(_doc_blocks()) == EXPECTED_EXAMPLES


def test_the_documented_keys_and_their_key_ids():
    text = " ".join(DOC.read_text().split())
    for creator, key in _example_keys().items():
        kid = key_id(key.public_key())
        assert kid == thumbprint(key.public_key())
        assert f"keyId is `{kid}`" in text or f"keyId `{kid}`" in text, f"{creator}'s keyId {kid} not in the document"


def test_the_documented_transaction_is_signed_as_the_document_says():
    blocks = _doc_blocks()
    key = _example_keys()["gw-demo-01"]
    tx = json.loads(_http(blocks["exchange", "create request"])[2])
    documented_input = blocks["example", "signing-input"].rstrip("\n").encode()
    assert signing_input(tx) == documented_input
    assert f"signing input, {len(documented_input)} bytes" in " ".join(DOC.read_text().split())
    # the client makes the same transaction but for the signature, whose nonce is random
    ours = hash_creation(bytes.fromhex(tx["hash"]), tx["creator"], key, tx["date"])
    assert {k: v for k, v in ours.items() if k != "signature"} == {k: v for k, v in tx.items() if k != "signature"}
    assert signature_valid(ours, key.public_key()) and signature_valid(tx, key.public_key())
    # the documented signature: RFC 6979 by python-ecdsa, R || S, base64url
    sk = ecdsa.SigningKey.from_secret_exponent(key.private_numbers().private_value, ecdsa.NIST256p,
                                               hashfunc=hashlib.sha256)
    assert b64url_decode(tx["signature"]) == sk.sign_deterministic(documented_input, hashfunc=hashlib.sha256)
    tx_path = _http(blocks["exchange", "transaction request"])[0].split()[1]
    assert tx_path.endswith("/" + transaction_id(tx))


@pytest.fixture(scope="module")
def documented_observer():
    """An observer like the document's, its clock at the example's date, every exchange replayed in order."""
    clock = [parse_date(EXAMPLE_DATE) + 2]
    observer = Observer(EXAMPLE_CHAIN, EXAMPLE_VERSION, height=EXAMPLE_HEIGHT, clock=lambda: clock[0]).start()
    for creator, key in _example_keys().items():
        observer.register(creator, key.public_key())
    answers = {}
    for name, request, response in _exchanges():
        _BEFORE.get(name, lambda obs, clock: None)(observer, clock)
        first, headers, body = _http(request)
        method, path, _ = first.split()
        got = _send(observer, method, path, body or None, {k: v for k, v in headers.items() if k != "Host"})
        answers[name] = (response, got)
    yield observer, answers
    observer.stop()


def test_the_observer_answers_every_documented_request_as_documented(documented_observer):
    _, answers = documented_observer
    wrong = []
    for name, (documented, (status, headers, answer)) in answers.items():
        first, doc_headers, doc_body = _http(documented)
        got_headers = {k: headers.get(k) for k in doc_headers}
        if (int(first.split()[1]), got_headers, json.loads(doc_body)) != (status, doc_headers, answer):
            wrong.append(f"--- {name}: the observer answered\nHTTP/1.1 {status}\n"
                         + "".join(f"{k}: {headers.get(k)}\n" for k in doc_headers)
                         + "\n" + json.dumps(answer, indent=2))
    assert not wrong, "docs/ANCHOR-REST.md differs from the observer:\n" + "\n".join(wrong)


def test_the_client_meets_the_documented_answers(documented_observer):
    observer, answers = documented_observer
    keys = _example_keys()
    confirmed = json.loads(_http(answers["hash-confirmed"][0])[2])
    tx = confirmed["transaction"]
    root = bytes.fromhex(tx["hash"])

    auditor = RestAnchor(observer.url, creator_keys={"gw-demo-01": [keys["gw-demo-01"].public_key()]},
                         timeout=TIMEOUT)
    assert auditor.info() == json.loads(_http(answers["info"][0])[2])
    receipt = auditor.lookup(root)
    assert (receipt.chain, receipt.reference, receipt.block, receipt.block_time, receipt.details["transaction"]) == (
        EXAMPLE_CHAIN, confirmed["id"], confirmed["blockNumber"], parse_date(confirmed["blockTime"]), tx)
    assert auditor.lookup(bytes.fromhex(_exchange_path("not-found").rsplit("/", 1)[1])) is None

    def message(name):
        return json.loads(_http(answers[name][0])[2])["message"]

    for creator, key, name in (("gw-demo-99", keys["gw-demo-01"], "unknown-identity"),
                               ("gw-demo-01", keys["gw-demo-02"], "unknown-key"),
                               ("gw-demo-02", keys["gw-demo-02"], "hash-taken")):
        e = raised(RestAnchor(observer.url, creator=creator, key=key, timeout=TIMEOUT).submit, root, 1)
        assert e.code == "rejected" and message(name) in e.reason, (name, e.reason)

    gateway = RestAnchor(observer.url, creator="gw-demo-01", key=keys["gw-demo-01"], timeout=TIMEOUT)
    e = raised(gateway.submit, root_of("a root of today"), 1)  # today is far from the observer's 2025 clock
    assert e.code == "rejected" and "date_out_of_range" in e.reason
    for name, kind, seconds in (("rate-limited", "rate_limited", 30), ("unavailable", "unavailable", 10)):
        observer.fail(kind, retry_after=seconds)
        e = raised(gateway.lookup, root)
        assert isinstance(e, AnchorUnreachable) and e.retry_after == int(
            _http(answers[name][0])[1]["Retry-After"]) == seconds and message(name) in e.reason


def _exchange_path(name: str) -> str:
    return next(_http(req)[0].split()[1] for n, req, _ in _exchanges() if n == name)


def test_the_documented_client_code_runs(tls_observer, tmp_path):
    keys = _example_keys()
    tls_observer.register("gw-demo-01", keys["gw-demo-01"].public_key())
    (tmp_path / "gateway.key").write_bytes(keys["gw-demo-01"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "gw-demo-01.pub.pem").write_bytes(keys["gw-demo-01"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code = (_doc_blocks()["example", "client"]
            .replace("https://observer.example/govchain/v1", tls_observer.url)
            .replace("/etc/govedge/govchain-ca.pem", str(tls_observer.ca_file))
            .replace('Path("', f'Path("{tmp_path}/'))
    scope = {"root": root_of("the documented client"), "epoch": 1}
    exec(compile(code, str(DOC), "exec"), scope)
    assert scope["confirmed"] is None and scope["receipt"] is None  # pending: not in a block yet
    tls_observer.make_block()
    assert scope["anchor"].confirm(scope["anchor"].submit(scope["root"], 1)).confirmed
    assert scope["auditor"].lookup(scope["root"]).details["signature_checked"]
