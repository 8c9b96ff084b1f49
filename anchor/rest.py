"""REST hash anchoring: a signed HashCreation posted to a GovChain NRW observer node.

docs/ANCHOR-REST.md is the API this module speaks. The gateway signs each root
it anchors with its own P-256 key (ES256 over the RFC 8785 canonical JSON of the
transaction) under its registered identity, its gateway id; the observer puts
the transaction in a block later. Every answer of the observer is checked: the
hash is the one asked for, the transaction id is the hash of the transaction,
and the signature verifies with a key of the creator that this side holds. An
observer cannot pass off another root, or a transaction nobody signed, as ours.

The gateway:

    RestAnchor("https://observer.example/govchain/v1", creator="gw-0017",
               key=gateway_private_key, ca_file="/etc/govedge/govchain-ca.pem")

An auditor, with the public key of each gateway whose roots it checks (from the
gateway's PEM file, e.g. ``serialization.load_pem_public_key``):

    RestAnchor(url, creator_keys={"gw-0017": [gateway_public_key]}).lookup(root)

Without ``creator_keys`` a lookup still checks the hash and the transaction id,
but not who signed it (``details["signature_checked"]`` is False then).
"""

from __future__ import annotations

import base64
import calendar
import datetime
import email.utils
import hashlib
import http.client
import json
import math
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from govedge.core import redact
from govedge.core.wire import DEVICE_ID
from . import AnchorError, Receipt, Setting, register

API_MAJOR_VERSION = "1"
TRANSACTION_TYPE = "HashCreation"
HASH_ALGORITHM = "SHA-256"
TRANSACTION_MEMBERS = ("type", "hash", "algorithm", "date", "creator", "keyId", "signature")
RECORD_STATUSES = ("pending", "confirmed")
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339 section 5.6, UTC, whole seconds
MAX_ANSWER_BYTES = 1 << 20
DEFAULT_TIMEOUT = 10.0

IDENTITY = DEVICE_ID  # a registered identity is named like a device: letters, digits, . _ -, at most 64
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")


class AnchorUnreachable(AnchorError):
    """The observer did not answer, or asked to be asked later; ``retry_after`` is the
    number of seconds it asked for (its Retry-After header), or None if it named none."""

    def __init__(self, reason: str, retry_after: int | None = None):
        super().__init__("unreachable", reason)
        self.retry_after = retry_after


# --- the signed transaction (docs/ANCHOR-REST.md, "The HashCreation transaction") ---


def b64url(data: bytes) -> str:
    # RFC 4648 section 5, without padding (RFC 7515 section 2)
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url; anything else (padding, other characters) is a ValueError."""
    if not isinstance(text, str) or not _BASE64URL.match(text) or len(text) % 4 == 1:
        raise ValueError(f"{text!r} is not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value) -> bytes:
    """RFC 8785 canonical JSON (the rfc8785 package comes with the [gateway] extra, imported when first used:
    the backend registers itself, and `govedge` builds its command line, without it)."""
    import rfc8785

    return rfc8785.dumps(value)


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint of a P-256 key: the keyId a HashCreation names."""
    numbers = public_key.public_numbers()
    # RFC 7638 section 3.2: the required members of an EC JWK (RFC 7518 section 6.2.1), in
    # lexicographic order without whitespace, which is what RFC 8785 makes of them
    jwk = {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}
    return b64url(hashlib.sha256(canonical_json(jwk)).digest())


def signing_input(transaction: Mapping) -> bytes:
    """The bytes the signature covers: RFC 8785 canonical JSON of every member but ``signature``."""
    return canonical_json({k: v for k, v in transaction.items() if k != "signature"})


def transaction_id(transaction: Mapping) -> str:
    """SHA-256 over the RFC 8785 canonical JSON of the whole signed transaction, lowercase hex."""
    return hashlib.sha256(canonical_json(dict(transaction))).hexdigest()


def format_date(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime(DATE_FORMAT)


def parse_date(text: str) -> int:
    """Seconds since 1970 of a date in the API's form (2025-11-28T03:20:00Z); ValueError otherwise."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ValueError(f"{text!r} is not a date of the form 2025-11-28T03:20:00Z")
    return calendar.timegm(time.strptime(text, DATE_FORMAT))


def hash_creation(root: bytes, creator: str, key: ec.EllipticCurvePrivateKey, date: str) -> dict:
    """A HashCreation of ``root``, signed by ``creator`` with ``key`` (ES256 over the signing input)."""
    transaction = {
        "type": TRANSACTION_TYPE,
        "hash": root.hex(),
        "algorithm": HASH_ALGORITHM,
        "date": date,
        "creator": creator,
        "keyId": key_id(key.public_key()),
    }
    der = key.sign(signing_input(transaction), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    # RFC 7518 section 3.4: the JWS signature is R || S, each 32 bytes big-endian
    transaction["signature"] = b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return transaction


def signature_valid(transaction: Mapping, public_key: ec.EllipticCurvePublicKey) -> bool:
    try:
        raw = b64url_decode(transaction["signature"])
    except ValueError:
        return False
    if len(raw) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, signing_input(transaction), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- the observer's HTTP API ---


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # an observer that redirects is misconfigured; a signed POST must not be replayed elsewhere
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _retry_after(value: str | None) -> int | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date; None for anything else."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0, math.ceil(when.timestamp() - time.time()))


class RestAnchor:
    """The REST anchoring backend: submit, confirm and look up roots at one observer node.

    ``url`` is the API's base URL (docs/ANCHOR-REST.md, "Base URL"). Submitting needs
    ``creator`` (the gateway id, the identity registered on the chain) and ``key`` (the
    gateway's P-256 private key). ``creator_keys`` maps identities to the public keys
    trusted for them; a lookup of a root anchored by anyone else is a mismatch then.
    ``ca_file`` is a PEM file of the CAs the observer's certificate chains to (default:
    the system's). ``timeout`` bounds every connect and every read, in seconds.
    """

    name = "rest"

    def __init__(
        self,
        url: str,
        *,
        creator: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        creator_keys: Mapping[str, Iterable[ec.EllipticCurvePublicKey]] | None = None,
        ca_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"observer URL {redact.url(url)!r}: an https:// (or http://) URL with a host expected")
        if parts.query or parts.fragment:
            raise ValueError(f"observer URL {redact.url(url)!r}: a base URL has no query or fragment")
        if creator is not None and not IDENTITY.match(creator):
            raise ValueError(
                f"creator {creator!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if key is not None:
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("key: a P-256 (secp256r1) private key expected, the gateway's own")
            if creator is None:
                raise ValueError("key given without creator: name the identity the key is registered for")
        if not timeout > 0:
            raise ValueError(f"timeout {timeout!r}: a number of seconds above 0 expected")
        self.url = url.rstrip("/")
        self.where = redact.url(self.url)  # the observer as messages and receipts name it
        self.creator = creator
        self.timeout = float(timeout)
        self._key = key
        self._trusted: dict[str, dict[str, ec.EllipticCurvePublicKey]] = {}
        for ident, keys in (creator_keys or {}).items():
            for k in keys:
                if not isinstance(k, ec.EllipticCurvePublicKey) or k.curve.name != "secp256r1":
                    raise ValueError(f"creator_keys[{ident!r}]: P-256 public keys expected")
                self._trusted.setdefault(ident, {})[key_id(k)] = k
        if key is not None:
            own = key.public_key()
            self._trusted.setdefault(creator, {})[key_id(own)] = own
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"ca_file {str(ca_file)!r}: no such file (PEM file of the observer's CA expected)")
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        except ssl.SSLError as e:
            raise ValueError(f"ca_file {str(ca_file)!r}: not a PEM file of CA certificates ({e})") from None
        # no proxy from the environment: the observer is reached directly, as configured
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _RefuseRedirects
        )
        self._info: dict | None = None

    # --- the AnchorBackend protocol ---

    def submit(self, root: bytes, epoch: int) -> Receipt:
        _check_root(root)
        if self._key is None:
            raise ValueError("submitting needs the gateway's creator id and private key (creator=, key=)")
        chain = self.chain
        transaction = hash_creation(root, self.creator, self._key, format_date(time.time()))
        _, record = self._call("POST", "/transactions", transaction)
        return self._receipt(record, root, chain, f"POST {self.where}/transactions", own=True, epoch=epoch)

    def confirm(self, receipt: Receipt) -> Receipt | None:
        if receipt.backend != self.name:
            raise ValueError(f"receipt of the {receipt.backend!r} backend given to the {self.name!r} backend")
        if not _HEX64.match(receipt.reference):
            raise ValueError(f"receipt reference {receipt.reference!r} is not a transaction id (64 lowercase hex)")
        chain = self.chain
        if receipt.chain != chain:
            raise AnchorError(
                "mismatch", f"receipt is for chain {receipt.chain!r}, the observer at {self.where} serves {chain!r}"
            )
        path = f"/transactions/{receipt.reference}"
        status, record = self._call("GET", path, allow_404=True)
        if status == 404:
            raise AnchorError(
                "rejected",
                f"observer at {self.where} no longer knows transaction {receipt.reference} for root "
                f"{receipt.root.hex()}: it was dropped before it went into a block; submit the root again",
            )
        confirmed = self._receipt(record, receipt.root, chain, f"GET {self.where}{path}", own=True,
                                  reference=receipt.reference, epoch=receipt.details.get("epoch"))
        return confirmed if confirmed.confirmed else None

    def lookup(self, root: bytes, anchored_by: str | None = None) -> Receipt | None:
        """The confirmed receipt of ``root`` as the observer holds it; None if the chain
        has no transaction for it, or one that is not in a block yet. ``anchored_by``: the
        creator it must have (the observer keeps one creator per hash)."""
        _check_root(root)
        chain = self.chain
        path = f"/hashes/{root.hex()}"
        status, record = self._call("GET", path, allow_404=True)
        if status == 404:
            return None
        receipt = self._receipt(record, root, chain, f"GET {self.where}{path}", own=False)
        if anchored_by is not None and receipt.details["creator"] != anchored_by:
            raise AnchorError("mismatch", f"GET {self.where}{path}: root {root.hex()} is anchored by "
                                          f"{receipt.details['creator']!r}, not by {anchored_by!r}")
        return receipt if receipt.confirmed else None

    # --- the observer ---

    def info(self) -> dict:
        """The observer's GET /info answer: chain name, API version, clock skew it accepts."""
        if self._info is None:
            _, answer = self._call("GET", "/info")
            where = f"GET {self.where}/info"
            if not isinstance(answer.get("chain"), str) or not answer["chain"]:
                raise AnchorError("mismatch", f"{where}: no chain name in the answer {_snippet(answer)}")
            if not isinstance(answer.get("version"), str):
                raise AnchorError("mismatch", f"{where}: no version in the answer {_snippet(answer)}")
            if answer["version"].split(".")[0] != API_MAJOR_VERSION:
                raise AnchorError("rejected", f"{where}: the observer speaks API version {answer['version']!r}; "
                                              f"this client speaks {API_MAJOR_VERSION}.x (docs/ANCHOR-REST.md)")
            self._info = answer
        return self._info

    @property
    def chain(self) -> str:
        return self.info()["chain"]

    def _call(self, method: str, path: str, body: dict | None = None, allow_404: bool = False) -> tuple[int, dict]:
        """One request; a 2xx JSON object (or a 404 when allowed) comes back, all else is an AnchorError."""
        url = self.url + path
        what = f"{method} {self.where}{path}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
                    status, answer_headers = answer.status, answer.headers
                    raw = answer.read(MAX_ANSWER_BYTES + 1)
            except urllib.error.HTTPError as e:
                status, answer_headers = e.code, e.headers
                raw = e.read(MAX_ANSWER_BYTES + 1)
                e.close()
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise AnchorUnreachable(
                    f"{what}: the observer's TLS certificate is not trusted ({reason.verify_message}); "
                    "is ca_file the CA of the observer?"
                ) from e
            if isinstance(reason, TimeoutError):
                raise AnchorUnreachable(f"{what}: no connection within {self.timeout:g} s") from e
            raise AnchorUnreachable(f"{what}: cannot connect: {reason}") from e
        except TimeoutError as e:
            raise AnchorUnreachable(f"{what}: no answer within {self.timeout:g} s") from e
        except (http.client.HTTPException, OSError) as e:
            raise AnchorUnreachable(f"{what}: the connection broke: {e!r}") from e

        if 200 <= status < 300:
            if len(raw) > MAX_ANSWER_BYTES:
                raise AnchorError("mismatch", f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise AnchorError("mismatch", f"{what}: answered {status} with no JSON object: {_snippet(raw)}")
            return status, parsed
        if status == 404 and allow_404:
            return status, {}
        try:
            error = json.loads(raw)
        except ValueError:
            error = None
        if isinstance(error, dict) and isinstance(error.get("error"), str):
            said = f"{error['error']}: {error.get('message', '')}"
        else:
            said = f"no error body, {_snippet(raw)}"
        if 300 <= status < 400:
            raise AnchorError("rejected", f"{what}: observer redirected ({status}) to "
                                          f"{answer_headers.get('Location')!r}; observers do not redirect: "
                                          "is the base URL right?")
        if status == 429 or status >= 500:
            retry_after = _retry_after(answer_headers.get("Retry-After"))
            later = f"; retry after {retry_after} s" if retry_after is not None else ""
            raise AnchorUnreachable(f"{what}: observer answered {status} ({said}){later}", retry_after)
        raise AnchorError("rejected", f"{what}: observer refused with {status} {said}")

    def _receipt(self, record: dict, root: bytes, chain: str, where: str, *, own: bool,
                 reference: str | None = None, epoch: int | None = None) -> Receipt:
        """A receipt from the observer's transaction record, once it is shown to be about ``root``."""
        transaction = _transaction_of(record, where)
        if transaction["hash"] != root.hex():
            raise AnchorError("mismatch", f"{where}: observer answered with hash {transaction['hash']}, "
                                          f"not {root.hex()}")
        if record["id"] != transaction_id(transaction):
            raise AnchorError("mismatch", f"{where}: transaction id {record['id']} is not the SHA-256 of "
                                          f"the transaction it came with ({transaction_id(transaction)})")
        if reference is not None and record["id"] != reference:
            raise AnchorError("mismatch", f"{where}: observer answered with transaction {record['id']}, "
                                          f"not {reference}")
        creator = transaction["creator"]
        if own and creator != self.creator:
            raise AnchorError("mismatch", f"{where}: root {root.hex()} is anchored by {creator!r}, not by "
                                          f"{self.creator!r}")
        checked = self._check_signature(transaction, where)
        block = block_time = None
        if record["status"] == "confirmed":
            block, block_time = record["blockNumber"], parse_date(record["blockTime"])
        details = {
            "observer": self.where,
            "creator": creator,
            "key_id": transaction["keyId"],
            "date": transaction["date"],
            "transaction": transaction,
            "signature_checked": checked,
        }
        if epoch is not None:
            details["epoch"] = epoch
        return Receipt(backend=self.name, chain=chain, root=root, reference=record["id"], block=block,
                       block_time=block_time, details=details)

    def _check_signature(self, transaction: dict, where: str) -> bool:
        """True once the signature verifies with a trusted key of its creator; False when no
        keys were given at all; a mismatch otherwise."""
        if not self._trusted:
            return False
        creator, kid = transaction["creator"], transaction["keyId"]
        keys = self._trusted.get(creator)
        if keys is None:
            raise AnchorError("mismatch", f"{where}: anchored by {creator!r}, for whom no key was given "
                                          f"(keys given for {sorted(self._trusted)})")
        if kid not in keys:
            raise AnchorError("mismatch", f"{where}: signed with key {kid!r}, not one given for {creator!r} "
                                          f"({sorted(keys)})")
        if not signature_valid(transaction, keys[kid]):
            raise AnchorError("mismatch", f"{where}: the signature of the transaction for {transaction['hash']} "
                                          f"does not verify with key {kid!r} of {creator!r}")
        return True


def _check_root(root: bytes) -> None:
    if not isinstance(root, (bytes, bytearray)) or len(root) != 32:
        raise ValueError(f"root: 32 bytes (a SHA-256 tree head) expected, got {root!r:.80}")


def _transaction_of(record: dict, where: str) -> dict:
    """The signed transaction of a transaction record whose shape is as documented; a mismatch if not."""

    def wrong(problem: str) -> AnchorError:
        return AnchorError("mismatch", f"{where}: not a transaction record ({problem}): {_snippet(record)}")

    if not isinstance(record.get("id"), str) or not _HEX64.match(record["id"]):
        raise wrong("id: 64 lowercase hex digits expected")
    if record.get("status") not in RECORD_STATUSES:
        raise wrong(f"status: one of {RECORD_STATUSES} expected")
    number, block_time = record.get("blockNumber"), record.get("blockTime")
    if record["status"] == "confirmed":
        if type(number) is not int or number < 0:
            raise wrong("blockNumber: a block number expected once confirmed")
        try:
            parse_date(block_time)
        except ValueError as e:
            raise wrong(f"blockTime: {e}") from None
    elif number is not None or block_time is not None:
        raise wrong("blockNumber and blockTime: null while pending")
    transaction = record.get("transaction")
    if not isinstance(transaction, dict) or sorted(transaction) != sorted(TRANSACTION_MEMBERS):
        raise wrong(f"transaction: an object with the members {', '.join(TRANSACTION_MEMBERS)} expected")
    if not all(isinstance(v, str) for v in transaction.values()):
        raise wrong("transaction: every member a string expected")
    if transaction["type"] != TRANSACTION_TYPE or transaction["algorithm"] != HASH_ALGORITHM:
        raise wrong(f"transaction: type {TRANSACTION_TYPE!r} and algorithm {HASH_ALGORITHM!r} expected")
    if not _HEX64.match(transaction["hash"]):
        raise wrong("transaction hash: 64 lowercase hex digits expected")
    return transaction


def _snippet(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = json.dumps(value)
    return repr(value[:200] + ("..." if len(value) > 200 else ""))


# --- the backend as gateway.toml's [anchor.rest] names it ---


def _for_gateway(gateway) -> RestAnchor:
    """The gateway's backend: it signs with the gateway's own key, under its id."""
    a = gateway.anchor
    return RestAnchor(a["url"], creator=gateway.gateway_id, key=gateway.signing_key(), ca_file=a.get("ca"),
                      timeout=float(a.get("timeout_s", DEFAULT_TIMEOUT)))


def _for_auditor(settings, creator_keys) -> RestAnchor:
    """An auditor's backend: with ``creator_keys``, only records the gateway signed count."""
    return RestAnchor(settings["url"], ca_file=settings.get("ca"), creator_keys=creator_keys)


register(
    "rest", description="GovChain NRW observer: a signed HashCreation per root (REST hash API)",
    settings=(
        Setting("url", "url", "the govchain observer's URL (REST anchoring)", required=True, flag="--observer",
                audit=True, example="https://observer.govchain.example/api/v1"),
        Setting("ca", "file", "CAs of the observer's certificate (PEM)", default="the system's", flag="--ca",
                audit=True, example="/etc/govedge/govchain-ca.pem"),
        Setting("timeout_s", "number", "seconds for every connect and every read", default=DEFAULT_TIMEOUT),
    ),
    make=_for_gateway, audit=_for_auditor, doc="docs/ANCHOR-REST.md")
