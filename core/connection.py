"""Why a connection to an MQTT broker failed, in words a technician acts on, and its log lines rate-limited.

paho tells a service three things about a connection that is not there: the broker answered
CONNECT with a refusal (a CONNACK reason code: ``refused``), an attempt failed below MQTT (a
refused TCP connection, a name that does not resolve, a timeout, a TLS handshake: ``attempt``,
from govedge.core.mqtt's ``Client.connect_error``), or a connection was lost or closed before the
broker accepted it (``lost``). Each becomes a ``Cause``: a short code, what happened naming the
broker, and a hint naming the configuration keys to check.

``Link`` keeps one connection's story: the first failure is logged at once, the same cause again
at most once a minute with the number of attempts since, a new cause at once, and the recovery
in one line; a connection that comes and goes (two gateways with one client id take turns) is
logged at most once a minute each way, with how often it came and went. What it tells
``on_state`` (the gateway's live.json) changes only when the cause does, so a broker refusing for
hours costs no SD-card writes beyond the first.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from typing import Callable, NamedTuple

from . import redact
from .errors import text_of

LOG_EVERY_S = 60.0  # while the same cause persists, at most one log line this often
CONNECTING = "connecting to "  # how a state of the first attempt begins (govedge.gateway.health lets it be a while)

# CONNACK and DISCONNECT reason codes (MQTT 5.0 section 3.2.2.2, 3.14.2.1); paho gives MQTT 3.1.1's
# connect return codes in the same numbering (1 -> 132, 2 -> 133, 3 -> 136, 4 -> 134, 5 -> 135)
UNSUPPORTED_PROTOCOL, CLIENT_ID_NOT_VALID, BAD_CREDENTIALS, NOT_AUTHORIZED = 132, 133, 134, 135
SERVER_UNAVAILABLE, SERVER_BUSY, BANNED, BAD_AUTH_METHOD = 136, 137, 138, 140
SERVER_SHUTTING_DOWN, KEEPALIVE_TIMEOUT, SESSION_TAKEN_OVER = 139, 141, 142

# the codes a Cause may carry (gateway/README.md, "status": parts.*.failure.code)
CODES = ("credentials", "not_authorized", "client_id", "unavailable", "banned", "protocol", "rejected", "refused",
         "dns", "timeout", "unreachable", "tls_certificate", "tls", "closed", "taken_over", "lost", "error")


class Cause(NamedTuple):
    code: str  # one of CODES
    cause: str  # what happened, naming the broker
    hint: str  # what to check

    def line(self) -> str:
        return f"{self.cause}: {self.hint}"


def refused(reason, broker: str, section: str, who: str = "the gateway") -> Cause:
    """A CONNACK that refused the connection (``reason``: paho's ReasonCode)."""
    value = getattr(reason, "value", reason)
    if value == BAD_CREDENTIALS:
        return Cause("credentials", f"{broker} refused {who}'s credentials ({reason})",
                     f"check {section} user and password")
    if value == NOT_AUTHORIZED:  # Mosquitto's answer to a wrong password under MQTT 3.1.1, and to no login
        return Cause("not_authorized", f"{broker} refused {who}'s credentials ({reason})",
                     f"check {section} user and password, and that the broker's password file has that user")
    if value == CLIENT_ID_NOT_VALID:
        return Cause("client_id", f"{broker} refused {who}'s client id ({reason})", f"check {section} client_id")
    if value in (SERVER_UNAVAILABLE, SERVER_BUSY):
        return Cause("unavailable", f"{broker} does not take connections now ({reason})",
                     "see the broker's log; trying again with growing pauses")
    if value == BANNED:
        return Cause("banned", f"{broker} banned {who} ({reason})", "ask the broker's administrator")
    if value in (UNSUPPORTED_PROTOCOL, BAD_AUTH_METHOD):
        return Cause("protocol", f"{broker} refused the protocol {who} speaks ({reason})",
                     "the broker needs MQTT 3.1.1 or 5 with user and password logins; see its configuration")
    return Cause("rejected", f"{broker} refused the connection ({reason})", "see the broker's log")


def attempt(exc: BaseException | None, broker: str, section: str, port: int, timeout_s: float = 5.0) -> Cause:
    """An attempt to connect that failed before MQTT could answer (``exc``: what the socket raised)."""
    if exc is None:
        return Cause("error", f"could not connect to {broker}", f"check {section} host and port")
    said = redact.text(text_of(exc))
    if isinstance(exc, socket.gaierror):
        return Cause("dns", f"the host name of {broker} does not resolve ({exc.strerror or said})",
                     f"check {section} host and the gateway's DNS (resolvectl status)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Cause("tls_certificate", f"the certificate of {broker} does not verify "
                     f"({exc.verify_message or said})",
                     f"check {section} ca (the CA that signed the broker's certificate) and that {section} host "
                     "is a name in that certificate")
    if isinstance(exc, ssl.SSLError):
        return Cause("tls", f"the TLS handshake with {broker} failed ({exc.reason or said})",
                     f"check {section} tls, ca, cert and key, and that port {port} is the broker's TLS listener")
    if isinstance(exc, ConnectionRefusedError):
        return Cause("refused", f"{broker} refused the TCP connection (nothing listens there)",
                     f"check {section} host and port, and that the broker runs (systemctl status mosquitto)")
    if isinstance(exc, TimeoutError):
        return Cause("timeout", f"no answer from {broker} within {timeout_s:g} s",
                     f"check the network, a firewall, and {section} host and port")
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return Cause("unreachable", f"{broker} is unreachable ({exc.strerror})",
                     f"check the gateway's network connection and routes (ip route), and {section} host")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return Cause("closed", f"{broker} closed the connection while it was made ({said})",
                     f"check {section} tls and port (TLS and plain MQTT on the wrong port end at once) and the "
                     "broker's log")
    return Cause("error", f"could not connect to {broker} ({type(exc).__name__}: {said})",
                 f"check {section} host and port")


def lost(reason, broker: str, section: str, accepted: bool) -> Cause:
    """A connection that ended without being asked to: after the broker accepted it (``accepted``), or before."""
    value = getattr(reason, "value", reason)
    if not accepted:
        return Cause("closed", f"{broker} closed the connection before accepting it ({reason})",
                     f"check {section} tls and port (a TLS listener closes a plain connection) and the broker's log")
    if value == SESSION_TAKEN_OVER:
        return Cause("taken_over", f"{broker} ended the connection: another client logged in with the same "
                     f"client id ({reason})", f"check {section} client_id: each client needs its own")
    if value == NOT_AUTHORIZED:
        return Cause("not_authorized", f"{broker} ended the connection: not authorized ({reason})",
                     "check the broker's ACL for this login")
    if value == KEEPALIVE_TIMEOUT:
        return Cause("timeout", f"{broker} ended the connection: nothing heard within the keepalive ({reason})",
                     "check the network between the gateway and the broker")
    if value == SERVER_SHUTTING_DOWN:
        return Cause("lost", f"{broker} shut down ({reason})", "reconnecting with growing pauses")
    return Cause("lost", f"lost the connection to {broker} ({reason})",
                 f"the broker restarted, the network failed, or another client logged in with the same client id "
                 f"({section} client_id); reconnecting with growing pauses")


class Link:
    """One connection to a broker, as told to the log and to ``on_state(state, ok, failure)``.

    ``name`` starts its log lines ("uplink"); ``broker`` names it in words ("the hub broker
    hub.example:8883"); ``section`` is its configuration table ("[hub]"); ``waiting`` says what
    waits while it is down (appended to the state, e.g. "; batches wait on disk"); ``log_every_s``: how
    often a cause that persists is logged again. ``failure``,
    given to ``on_state``, is a dict: code, cause, hint, since (when the failures began), and
    after a recovery also until and attempts. Safe to call from paho's network thread."""

    def __init__(self, name: str, broker: str, section: str, log: logging.Logger,
                 on_state: Callable[..., None], waiting: str = "", who: str = "the gateway",
                 log_every_s: float = LOG_EVERY_S):
        self.name, self.broker, self.section, self.log, self.on_state = name, broker, section, log, on_state
        self.waiting, self.who, self.log_every_s = waiting, who, log_every_s
        self.up = False
        self.failure: Cause | None = None  # the cause now, while failing
        self.since = 0.0  # when the failures began (time.time)
        self.attempts = 0  # failed attempts since they began
        self.unlogged = 0  # of them, not in the log yet
        self.logged_at = 0.0  # monotonic
        self.told_this_attempt = False  # a cause came for this attempt: its disconnect says nothing new
        self.last_cause: Cause | None = None  # the cause of the failures that ended last
        self.comings_and_goings = 0  # outages of that cause again within log_every_s, not in the log yet
        self.recovery_logged_at = -1e9  # monotonic
        self.lock = threading.Lock()

    # -- what paho tells, in the callbacks of the service that owns the connection -----------------

    def on_connect_fail(self, client, userdata) -> None:
        """paho's on_connect_fail: the attempt failed below MQTT (govedge.core.mqtt's Client kept why)."""
        exc = getattr(client, "connect_error", None)
        self.failed(attempt(exc, self.broker, self.section, getattr(client, "_port", 0),
                            getattr(client, "_connect_timeout", 5.0)))
        self.told_this_attempt = False  # no disconnect follows a socket that was never connected

    def refused(self, reason) -> None:
        """on_connect with a failing reason code."""
        self.failed(refused(reason, self.broker, self.section, self.who))
        self.told_this_attempt = True

    def disconnected(self, reason) -> None:
        """on_disconnect: asked for (a stop), lost after it was accepted, or closed before."""
        was_up, self.up = self.up, False
        if self.told_this_attempt:  # the socket closing after a refusal: the refusal is the cause
            self.told_this_attempt = False
            return
        if not getattr(reason, "is_failure", True):
            return  # a disconnect the service asked for (it stops)
        self.failed(lost(reason, self.broker, self.section, accepted=was_up))

    def connected(self, state: str) -> None:
        """on_connect with success: ``state`` in words ("connected to the hub broker ...")."""
        with self.lock:
            self.up = True
            self.told_this_attempt = False
            failure = None
            now = time.monotonic()
            if self.failure is not None:
                failure = {**self.failure._asdict(), "since": self.since, "until": time.time(),
                           "attempts": self.attempts}
                # a connection that comes and goes: its recoveries, like its failures, once a period at most
                if not self.comings_and_goings or now - self.recovery_logged_at >= self.log_every_s:
                    self.log.warning("%s: %s again after %s of failures (%d attempts; the last: %s)", self.name,
                                     state, _duration(time.time() - self.since), self.attempts, self.failure.cause)
                    self.recovery_logged_at = now
                self.last_cause, self.failure = self.failure, None
            else:
                self.log.info("%s: %s", self.name, state)
        self.on_state(state, True, failure)

    def connecting(self) -> None:
        self.on_state(f"{CONNECTING}{self.broker}", False, None)

    # -- the rule --------------------------------------------------------------------------------

    def failed(self, cause: Cause) -> None:
        """One failed attempt (or a lost connection): logged as the rule says, told when the cause changes."""
        now = time.monotonic()
        with self.lock:
            self.up = False
            if self.failure is None:
                self.since, self.attempts, self.unlogged = time.time(), 0, 0
            self.attempts += 1
            if cause == self.failure:
                self.unlogged += 1
                if now - self.logged_at < self.log_every_s:
                    return
                self.log.error("%s: still %s (%d more failed attempts in %s): %s", self.name, cause.cause,
                               self.unlogged, _duration(now - self.logged_at), cause.hint)
                self.logged_at, self.unlogged = now, 0
                return
            self.failure = cause
            failure = {**cause._asdict(), "since": self.since}
            if self.attempts == 1 and cause == self.last_cause and now - self.logged_at < self.log_every_s:
                self.comings_and_goings += 1  # the outage that just ended, again: told in the next line
            else:
                again = (f" (it came and went {self.comings_and_goings} times more in "
                         f"{_duration(now - self.logged_at)})" if self.comings_and_goings else "")
                self.logged_at, self.unlogged, self.comings_and_goings = now, 0, 0
                self.log.error("%s: %s%s", self.name, cause.line(), again)
        self.on_state(f"{cause.cause}{self.waiting}", False, failure)


def _duration(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
