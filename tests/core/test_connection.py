"""Why a connection to a broker is not there (govedge.core.connection): real paho clients (govedge.core.mqtt)
against real Mosquitto brokers and real sockets; each failure told by its cause with a hint, the log told once
per cause, again at most once a period while it lasts, and once when the connection is back."""

from __future__ import annotations

import logging
import time

import pytest

from govedge.core import mqtt
from govedge.core.config import MqttEndpoint
from govedge.core.connection import Link
from govedge.gateway.install import password_line
from govedge.tools.dev.broker import Mosquitto, free_port
from support import wait_until
from support.nodes import make_ca_and_server_cert

pytestmark = pytest.mark.e2e  # real Mosquitto brokers and sockets


class Connection:
    """A client of the kind the gateway's ingest and uplink make, its callbacks wired to a Link."""

    def __init__(self, ep: MqttEndpoint, log_every_s: float = 60.0):
        self.told: list[tuple[str, bool, dict | None]] = []
        self.log = logging.getLogger("govedge.test.connection")
        self.link = Link("uplink", f"the hub broker {ep.host}:{ep.port}", "[hub]", self.log,
                         lambda state, ok, failure: self.told.append((state, ok, failure)), log_every_s=log_every_s)
        self.client = mqtt.client(ep, clean_session=True)
        self.client.reconnect_delay_set(0.1, 0.2)  # many attempts in a short test
        self.client.on_connect = lambda c, u, f, reason, p: (
            self.link.refused(reason) if reason.is_failure else self.link.connected(f"connected to {self.link.broker}"))
        self.client.on_connect_fail = self.link.on_connect_fail
        self.client.on_disconnect = lambda c, u, f, reason, p: self.link.disconnected(reason)
        self.client.connect_async(ep.host, ep.port, 60)
        self.client.loop_start()

    def failing_for(self, attempts: int) -> dict:
        wait_until(lambda: self.link.attempts >= attempts, timeout=20, what=f"{attempts} failed attempts",
                   detail=lambda: repr(self.told))
        return self.told[-1][2]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def brokers(tmp_path):
    started = []

    def start(**kw):
        started.append(Mosquitto(tmp_path / f"broker-{len(started)}", **kw).start())
        return started[-1]

    yield start
    for b in started:
        b.stop()


def lines(caplog, level=logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "govedge.test.connection" and r.levelno == level]


def test_nothing_listening_is_a_refused_tcp_connection(caplog):
    c = Connection(MqttEndpoint("127.0.0.1", free_port(), "c1"))
    try:
        failure = c.failing_for(3)
    finally:
        c.close()
    assert failure["code"] == "refused" and "refused the TCP connection" in failure["cause"]
    assert failure["hint"] == "check [hub] host and port, and that the broker runs (systemctl status mosquitto)"
    assert len(lines(caplog)) == 1  # three attempts, one line


def test_a_host_name_that_does_not_resolve_is_dns(caplog):
    c = Connection(MqttEndpoint("no-such-host.invalid", 1883, "c2"))
    try:
        failure = c.failing_for(2)
    finally:
        c.close()
    assert failure["code"] == "dns" and "check [hub] host and the gateway's DNS" in failure["hint"]
    assert lines(caplog) == [f"uplink: {failure['cause']}: {failure['hint']}"]


def test_a_wrong_password_is_refused_credentials(brokers, tmp_path, caplog):
    passwords = tmp_path / "passwords"
    passwords.write_text(password_line("gw", "right") + "\n")
    broker = brokers(extra_config=f"allow_anonymous false\npassword_file {passwords}\n")
    c = Connection(MqttEndpoint("127.0.0.1", broker.port, "c3", "gw", "wrong"))
    try:
        failure = c.failing_for(3)
    finally:
        c.close()
    assert failure["code"] == "not_authorized"  # Mosquitto's answer under MQTT 3.1.1
    assert failure["cause"] == f"the hub broker 127.0.0.1:{broker.port} refused the gateway's credentials " \
                               "(Not authorized)"
    assert "check [hub] user and password" in failure["hint"]
    assert len(lines(caplog)) == 1  # a refusal and the socket closing after it, three times: one line
    assert "wrong" not in caplog.text


def test_a_certificate_of_another_ca_does_not_verify(brokers, tmp_path, caplog):
    _, cert, key = make_ca_and_server_cert(tmp_path / "broker-ca")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other-ca")
    broker = brokers(extra_config=f"certfile {cert}\nkeyfile {key}\n")
    c = Connection(MqttEndpoint("127.0.0.1", broker.port, "c4", tls=True, ca=str(other_ca)))
    try:
        failure = c.failing_for(2)
    finally:
        c.close()
    assert failure["code"] == "tls_certificate" and "does not verify" in failure["cause"]
    assert "check [hub] ca" in failure["hint"]
    assert len(lines(caplog)) == 1


def test_plain_mqtt_to_a_tls_port_is_closed_before_it_is_accepted(brokers, tmp_path, caplog):
    _, cert, key = make_ca_and_server_cert(tmp_path / "broker-ca")
    broker = brokers(extra_config=f"certfile {cert}\nkeyfile {key}\n")
    c = Connection(MqttEndpoint("127.0.0.1", broker.port, "c5"))
    try:
        failure = c.failing_for(2)
    finally:
        c.close()
    assert failure["code"] == "closed" and "before accepting it" in failure["cause"]
    assert "check [hub] tls and port" in failure["hint"]
    assert len(lines(caplog)) == 1


def test_a_lasting_cause_is_logged_once_a_period_with_its_count_and_the_recovery_once(brokers, caplog):
    port = free_port()
    c = Connection(MqttEndpoint("127.0.0.1", port, "c6"), log_every_s=0.5)
    try:
        c.failing_for(1)
        began = time.monotonic()
        c.failing_for(12)
        elapsed = time.monotonic() - began
        errors = lines(caplog)
        again = [x for x in errors if x.startswith("uplink: still the hub broker")]
        assert errors[0].startswith(f"uplink: the hub broker 127.0.0.1:{port} refused the TCP connection")
        assert 1 <= len(again) <= elapsed / 0.5 + 1 < c.link.attempts  # fewer lines than attempts
        assert all("more failed attempts in" in x for x in again)
        told = len(c.told)  # the state is told when the cause changes, not per attempt
        brokers(port=port)  # the broker comes
        wait_until(lambda: c.told[-1][1], what="connected")
    finally:
        c.close()
    assert told == 1  # the first failure, once: the same cause again is not told again
    state, ok, failure = c.told[-1]
    assert ok and failure["code"] == "refused" and failure["attempts"] == c.link.attempts
    assert failure["until"] >= failure["since"]
    back = lines(caplog, logging.WARNING)
    assert len(back) == 1 and back[0].startswith(f"uplink: connected to the hub broker 127.0.0.1:{port} again after")


def test_a_connection_that_comes_and_goes_is_logged_once_a_period_each_way(brokers, caplog):
    broker = brokers()
    ep = MqttEndpoint("127.0.0.1", broker.port, "one-client-id")
    c = Connection(ep, log_every_s=60)
    rival = Connection(ep)  # the same client id: the broker ends the older connection each time the other comes
    try:
        wait_until(lambda: sum(not ok for _, ok, _ in c.told) >= 4, timeout=20, what="four outages")
    finally:
        rival.close()
        c.close()
    errors, back = lines(caplog), lines(caplog, logging.WARNING)
    assert len([x for x in errors if x.startswith("uplink: lost the connection")]) <= 2  # the link's, the rival's
    assert len([x for x in back if "again after" in x]) <= 2
    assert c.told[-1][2]["code"] == "lost"  # status is told each time all the same
