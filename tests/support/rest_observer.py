"""A GovChain observer node as docs/ANCHOR-REST.md describes it, over real HTTP.

Built from the document alone, with nothing of govedge.anchor.rest: it keeps its
own registry of identities (creator -> P-256 public keys, by RFC 7638
thumbprint), checks every HashCreation in the documented order with the
documented errors, verifies ES256 signatures with cryptography over RFC 8785
bytes, and keeps transactions pending until it makes a block (every
``block_interval`` seconds, or when ``make_block`` is called).

It can be made to misbehave the ways a real observer and the network between do:
``fail`` answers the next requests with 503 or 429 (with Retry-After), drops the
connection before or after carrying a request out, hangs, or alters a posted body
in transit; ``tamper`` makes it lie
in its answers (another hash, a broken signature); ``stop`` and ``start`` take it
off the network and back on the same port with every transaction kept.
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime
import hashlib
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

BASE_PATH = "/govchain/v1"
MAX_BODY = 4096
MEMBERS = ("type", "hash", "algorithm", "date", "creator", "keyId", "signature")
HEX64 = re.compile(r"[0-9a-f]{64}\Z")
IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
BASE64URL = re.compile(r"[A-Za-z0-9_-]+\Z")
DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z\Z")


class Refusal(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.body, self.headers = status, {"error": error, "message": message, **extra}, headers or {}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes | None:
    if not BASE64URL.match(text) or len(text) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # canonical form only: the trailing bits of the last character must be zero
    return raw if _b64url(raw) == text else None


def thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 section 3: SHA-256 of the required JWK members, ordered, no whitespace, spelled out."""
    n = public_key.public_numbers()
    x, y = _b64url(n.x.to_bytes(32, "big")), _b64url(n.y.to_bytes(32, "big"))
    jwk = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)
    return _b64url(hashlib.sha256(jwk.encode()).digest())


def rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date_seconds(text: str) -> int | None:
    m = DATE.match(text)
    if not m:
        return None
    try:
        return calendar.timegm(datetime.datetime(*map(int, m.groups())).timetuple())
    except ValueError:
        return None


def _no_duplicates(pairs):
    names = [k for k, _ in pairs]
    for k in names:
        if names.count(k) > 1:
            raise Refusal(400, "malformed", f"member {k!r} appears more than once")
    return dict(pairs)


class Observer:
    """One observer node of a chain; ``url`` is the API base URL while it runs."""

    def __init__(self, chain: str = "govchain-nrw-conformance", version: str = "1.0.0", *,
                 max_clock_skew: int = 300, height: int = 0, block_interval: float | None = None,
                 clock=time.time, tls: tuple[str, str] | None = None):
        self.chain, self.version, self.max_clock_skew = chain, version, max_clock_skew
        self.height = height  # number of the last block made
        self.block_interval = block_interval
        self.clock = clock
        self.tls = tls  # (certificate chain PEM, private key PEM)
        self.identities: dict[str, dict[str, ec.EllipticCurvePublicKey]] = {}
        self.records: dict[str, dict] = {}  # transaction id -> record
        self.by_hash: dict[str, str] = {}
        self.pending: list[str] = []
        self.received: list[bytes] = []  # every POST body, as it arrived
        self.tamper: str | None = None  # "hash" or "signature": lie in every transaction record
        self.failures: deque[tuple[str, int | str | None]] = deque()
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- the test's controls ---

    def register(self, creator: str, public_key: ec.EllipticCurvePublicKey) -> str:
        kid = thumbprint(public_key)
        with self.lock:
            self.identities.setdefault(creator, {})[kid] = public_key
        return kid

    def fail(self, kind: str, times: int = 1, retry_after: int | str | None = None):
        """The next ``times`` requests: "unavailable" (503), "rate_limited" (429), "drop" (the
        connection closed unanswered), "lose_answer" (the request carried out, its answer lost on
        the way back), "hang" (no answer until stopped), "alter" (a posted body's date changed in
        transit, after it was signed), "redirect" (301 to the same path elsewhere, which a
        misconfigured proxy in front of an observer does)."""
        assert kind in ("unavailable", "rate_limited", "drop", "hang", "alter", "lose_answer", "redirect"), kind
        with self.lock:
            self.failures.extend([(kind, retry_after)] * times)

    def make_block(self) -> int:
        """Put every pending transaction in a new block, at the observer's clock."""
        with self.lock:
            self.height += 1
            when = rfc3339(self.clock())
            for tid in self.pending:
                self.records[tid].update(status="confirmed", blockNumber=self.height, blockTime=when)
            self.pending.clear()
            return self.height

    def drop_pending(self):
        """Forget every pending transaction, as an observer whose pool expired them does."""
        with self.lock:
            for tid in self.pending:
                record = self.records.pop(tid)
                del self.by_hash[record["transaction"]["hash"]]
            self.pending.clear()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{BASE_PATH}"

    def start(self) -> "Observer":
        """Listen on 127.0.0.1: a free port the first time, the same port after a stop."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.released.clear()
        self._threads = [threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                          daemon=True)]
        if self.block_interval:
            self._threads.append(threading.Thread(target=self._block_maker, args=(self.server,), daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        """Off the network (connections refused); every transaction and block is kept."""
        server, self.server = self.server, None
        self.released.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(5)

    def _block_maker(self, server):
        while self.server is server and not self.released.wait(self.block_interval):
            self.make_block()

    # --- the API (docs/ANCHOR-REST.md) ---

    def handle(self, method: str, path: str, headers, body: bytes | None) -> tuple[int, dict, dict]:
        """(status, JSON body, extra headers) for one request."""
        if path == f"{BASE_PATH}/info":
            self._allow(method, "GET")
            return 200, {"chain": self.chain, "version": self.version, "hashAlgorithms": ["SHA-256"],
                         "maxClockSkew": self.max_clock_skew}, {}
        if path == f"{BASE_PATH}/transactions":
            self._allow(method, "POST")
            return self._post(headers, body)
        for prefix, index in ((f"{BASE_PATH}/hashes/", self.by_hash), (f"{BASE_PATH}/transactions/", None)):
            if path.startswith(prefix):
                self._allow(method, "GET")
                key = path[len(prefix):]
                what = "hash" if index is not None else "transaction id"
                if not HEX64.match(key):
                    raise Refusal(400, "malformed", f"{what} {key[:80]!r}: 64 lowercase hexadecimal digits expected")
                with self.lock:
                    tid = index.get(key) if index is not None else key
                    record = self.records.get(tid)
                    if record is None:
                        raise Refusal(404, "not_found", f"no transaction for {what} {key}")
                    return 200, self._answer(record), {}
        raise Refusal(404, "not_found", f"no such resource: {path[:200]}")

    def _allow(self, method: str, allowed: str):
        if method != allowed:
            raise Refusal(405, "method_not_allowed", f"{method} not allowed here; {allowed} is",
                          headers={"Allow": allowed})

    def _post(self, headers, body: bytes) -> tuple[int, dict, dict]:
        media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise Refusal(415, "unsupported_media_type", "Content-Type application/json expected")
        try:
            tx = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=lambda c: _raise(Refusal(400, "malformed", f"{c} is not JSON")))
        except (UnicodeDecodeError, ValueError) as e:
            raise Refusal(400, "malformed", f"body is not JSON: {e}") from None
        # 1. the form of every member
        if not isinstance(tx, dict):
            raise Refusal(400, "malformed", "body: a JSON object expected")
        for name in MEMBERS:
            if name not in tx:
                raise Refusal(400, "malformed", f"member {name!r} is missing")
            if not isinstance(tx[name], str):
                raise Refusal(400, "malformed", f"{name}: a string expected")
        extra = sorted(set(tx) - set(MEMBERS))
        if extra:
            raise Refusal(400, "malformed", f"unknown members {extra}")
        if tx["type"] != "HashCreation":
            raise Refusal(400, "malformed", f"type {tx['type']!r}: 'HashCreation' expected")
        if not HEX64.match(tx["hash"]):
            raise Refusal(400, "malformed", "hash: 64 lowercase hexadecimal digits expected")
        when = _date_seconds(tx["date"])
        if when is None:
            raise Refusal(400, "malformed", "date: an RFC 3339 UTC date such as 2025-11-28T03:20:00Z expected")
        if not IDENTITY.match(tx["creator"]):
            raise Refusal(400, "malformed", "creator: 1 to 64 letters, digits, '.', '_' or '-' expected")
        if not BASE64URL.match(tx["keyId"]) or len(tx["keyId"]) != 43:
            raise Refusal(400, "malformed", "keyId: an RFC 7638 thumbprint (43 base64url characters) expected")
        raw = _b64url_decode(tx["signature"])
        if raw is None or len(raw) != 64:
            raise Refusal(400, "malformed", "signature: 64 bytes (R || S) in unpadded base64url expected")
        # 2. the hash algorithm
        if tx["algorithm"] != "SHA-256":
            raise Refusal(400, "unsupported_algorithm", f"algorithm {tx['algorithm']!r}: only 'SHA-256' is accepted")
        with self.lock:
            # 3. the identity and its key
            keys = self.identities.get(tx["creator"])
            if keys is None:
                raise Refusal(403, "unknown_identity", f"creator {tx['creator']!r} is not a registered identity")
            key = keys.get(tx["keyId"])
            if key is None:
                raise Refusal(403, "unknown_key", f"key {tx['keyId']!r} is not registered for {tx['creator']!r}")
            # 4. the signature: ES256 over the RFC 8785 form of all members but the signature
            signed = rfc8785.dumps({k: v for k, v in tx.items() if k != "signature"})
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            try:
                key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise Refusal(403, "bad_signature",
                              f"signature does not verify with key {tx['keyId']!r} of {tx['creator']!r}") from None
            # 5. a hash anchored before: the same transaction for its creator, a conflict for anyone else
            tid = self.by_hash.get(tx["hash"])
            if tid is not None:
                record = self.records[tid]
                if record["transaction"]["creator"] == tx["creator"]:
                    return 200, self._answer(record), {}
                raise Refusal(409, "hash_taken",
                              f"hash {tx['hash']} was anchored by {record['transaction']['creator']!r}",
                              transaction=tid)
            # 6. the date, against the observer's clock
            skew = when - self.clock()
            if abs(skew) > self.max_clock_skew:
                raise Refusal(400, "date_out_of_range",
                              f"date {tx['date']} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                              f"the observer's clock (at most {self.max_clock_skew} s accepted)")
            tid = hashlib.sha256(rfc8785.dumps(tx)).hexdigest()
            record = {"id": tid, "status": "pending", "blockNumber": None, "blockTime": None, "transaction": tx}
            self.records[tid] = record
            self.by_hash[tx["hash"]] = tid
            self.pending.append(tid)
            return 202, self._answer(record), {"Location": f"{BASE_PATH}/transactions/{tid}"}

    def _answer(self, record: dict) -> dict:
        answer = copy.deepcopy(record)
        tx = answer["transaction"]
        if self.tamper == "hash":
            tx["hash"] = hashlib.sha256(bytes.fromhex(tx["hash"])).hexdigest()
        elif self.tamper == "signature":
            raw = bytearray(_b64url_decode(tx["signature"]))
            raw[40] ^= 0x01
            tx["signature"] = _b64url(bytes(raw))
        if self.tamper:
            # a careful liar: the id still matches what it hands out
            answer["id"] = hashlib.sha256(rfc8785.dumps(tx)).hexdigest()
        return answer


def _raise(e):
    raise e


def _handler(observer: Observer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "govchain-observer-conformance/1.0"

        def log_message(self, format, *args):
            pass  # quiet: the tests assert on answers, not on logs

        def do_GET(self):
            self._serve(None)

        def do_POST(self):
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                return self._send(400, {"error": "malformed", "message": "Content-Length missing"})
            if int(length) > MAX_BODY:
                self.close_connection = True
                if int(length) <= 64 * MAX_BODY:
                    self.rfile.read(int(length))  # read, so that closing does not reset the answer away
                return self._send(413, {"error": "payload_too_large",
                                        "message": f"body of {length} bytes; at most {MAX_BODY} accepted"})
            self._serve(self.rfile.read(int(length)))

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _serve(self, body: bytes | None):
            with observer.lock:
                failure = observer.failures.popleft() if observer.failures else None
            kind, retry_after = failure or (None, None)
            if kind == "drop":
                self.close_connection = True
                return
            if kind == "hang":
                observer.released.wait(30)
                self.close_connection = True
                return
            if kind in ("unavailable", "rate_limited"):
                status, error, message = (
                    (503, "unavailable", "the observer is catching up with the chain")
                    if kind == "unavailable" else
                    (429, "rate_limited", "too many requests from this address"))
                extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                return self._send(status, {"error": error, "message": message}, extra)
            if kind == "redirect":
                self.send_response(301)
                self.send_header("Location", "https://elsewhere.example" + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if kind == "alter" and body:
                tx = json.loads(body)
                tx["date"] = rfc3339(_date_seconds(tx["date"]) + 1)
                body = json.dumps(tx).encode()
            path = urllib.parse.urlsplit(self.path).path
            if body is not None and path == f"{BASE_PATH}/transactions":
                with observer.lock:
                    observer.received.append(body)
            try:
                status, answer, extra = observer.handle(self.command, path, self.headers, body)
            except Refusal as refusal:
                status, answer, extra = refusal.status, refusal.body, refusal.headers
            except Exception as e:  # a bug in this observer: answered as the document says, and visible
                status, answer, extra = 500, {"error": "internal", "message": repr(e)}, {}
            if kind == "lose_answer":
                self.close_connection = True
                return
            self._send(status, answer, extra)

        def _send(self, status: int, answer: dict, extra: dict | None = None):
            data = json.dumps(answer, indent=2).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
