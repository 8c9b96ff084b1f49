"""The attacks of issue 10, end to end with real processes: a Mosquitto for the nodes and the
gateway, one for the hub, `govedge gateway run` and `govedge hub run` each in its own process
group. The hostile message goes first; good signed readings from other devices, and from the
same device, follow it. Both services stay up, every good reading reaches the hub's store, and
the hostile message is quarantined at the gateway with its code, or refused alone at the hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time

import pytest
from cryptography.hazmat.primitives import serialization

from govedge.core import batch, topics, wire
from govedge.tools.dev.broker import Mosquitto
from govedge.hub.gateways import Gateways
from support.deploy import GATEWAY_ID, GatewayProcess
from support.hubkit import HubProcess, World, publish
from support import firmware, scalar, wait_until

pytestmark = pytest.mark.e2e  # the product's processes, end to end

VICTIM = "esp32-0003"  # whose topic and key the attacker has; esp32-0001 and -0002 are bystanders


def _unsigned_shared_value_loop(device: str) -> bytes:
    """92 bytes: a protected header whose alg is a CBOR shared value (tag 28) holding a reference
    (tag 29) to itself; an empty SenML pack; a signature of zeros."""
    protected = bytes.fromhex("a201d81c81d81d0004") + bytes([0x40 + len(device)]) + device.encode()
    return bytes([0xD2, 0x84, 0x40 + len(protected)]) + protected + b"\xa0" + b"\x41\x80" + b"\x58\x40" + bytes(64)


def _signed(device: str, seq: int, value) -> bytes:
    """A reading signed with the device's own key by the node's encoder: nothing but its contents is wrong."""
    return firmware("reading").signed_reading(scalar(device), device, seq, int(time.time()), [("temp", "Cel", value)])


HOSTILE = {
    # (the messages, the quarantine code of each)
    "shared_value_loop": (lambda: [_unsigned_shared_value_loop(VICTIM)], ["not_cbor"]),
    "seq_2_pow_63": (lambda: [_signed(VICTIM, 2**63, (2150, -2))], ["bad_sequence"]),
    # RFC 8949 section 3.4.4: 4([exponent, mantissa]); the node's encoder takes (mantissa, exponent)
    "decimal_exponent_3e9_and_1e8": (lambda: [_signed(VICTIM, 0, (5, 3_000_000_000)),
                                              _signed(VICTIM, 1, (2150, 10**8))], ["bad_record", "bad_record"]),
}


class Deployment:
    """Brokers, the gateway and the hub, with World's three devices in the registry both use."""

    def __init__(self, tmp_path, store: str = ""):
        self.world = World(tmp_path / "hub", devices=3)
        self.local = Mosquitto(tmp_path / "local-broker").start()
        self.hub_broker = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
        self.gateway = GatewayProcess(tmp_path / "gateway", self.world.folder / "registry.json", self.local.port,
                                      self.hub_broker.port, extra=store)
        gateways = Gateways.load(self.world.folder / "gateways.json")
        gateways.add(GATEWAY_ID, self.gateway.public_key)
        gateways.save()
        self.hub = HubProcess(self.world.hub_toml(self.hub_broker.port))
        self.sent: set[tuple[str, int]] = set()  # the good readings, (device, seq)

    def start(self) -> "Deployment":
        self.hub.start()
        self.hub.wait_subscribed()  # its persistent session keeps the batches from here on
        self.gateway.start()
        self.gateway.wait_for_log("ingest: subscribed")
        return self

    def stop(self) -> None:
        self.gateway.stop()
        self.hub.stop()
        self.local.stop()
        self.hub_broker.stop()

    def assert_up(self) -> None:
        """Both services run as the processes started: none has ended (nothing here would restart it)."""
        for name, service in (("gateway", self.gateway), ("hub", self.hub)):
            code = service.proc.poll()
            assert code is None, f"the {name} exited with {code}:\n{service.log[-3000:]}"

    def good(self, device: str) -> bytes:
        """The device's next good reading, counted among those the hub must have in the end."""
        self.sent.add((device, self.world.next_seq[device]))
        return self.world.message(device)

    def send_good(self, devices, per_device: int = 3) -> None:
        publish(self.local.port, [(topics.reading(device), self.good(device))
                                  for _ in range(per_device) for device in devices])

    def send_hostile(self, messages: list[bytes], device: str = VICTIM) -> None:
        publish(self.local.port, [(topics.reading(device), m) for m in messages])

    def _query(self, path, sql: str) -> list[tuple]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the service has not made its tables yet
            return []
        finally:
            db.close()

    def at_hub(self) -> set[tuple[str, int]]:
        return set(self._query(self.world.folder / "hub.db", "SELECT device_id, seq FROM readings"))

    def at_gateway(self) -> set[tuple[str, int]]:
        return set(self._query(self.gateway.folder / "data/gateway.db", "SELECT device_id, seq FROM readings"))

    def quarantine(self) -> list[tuple]:
        """(source, code, size, sha256, bytes kept) of each quarantined message, in arrival order."""
        return self._query(self.gateway.folder / "data/gateway.db",
                           "SELECT source, code, size, sha256, length(message) FROM quarantine ORDER BY id")

    def gateway_table(self, sql: str) -> list[tuple]:
        return self._query(self.gateway.folder / "data/gateway.db", sql)

    def hub_table(self, sql: str) -> list[tuple]:
        return self._query(self.world.folder / "hub.db", sql)

    def wait_until(self, predicate, timeout: float = 30, what: str = "condition") -> None:
        """As hubkit.wait_until, but a service that has ended fails the test at once."""

        def check():
            self.assert_up()
            return predicate()

        wait_until(check, timeout, what, detail=lambda: f"quarantine: {self.quarantine()}\n"
                                                        f"gateway log:\n{self.gateway.log[-3000:]}")

    def wait_all_good_at_hub(self, timeout: float = 30) -> None:
        self.wait_until(lambda: self.sent <= self.at_hub(), timeout,
                        f"all {len(self.sent)} good readings at the hub")


@pytest.fixture
def deployment(tmp_path):
    made: list[Deployment] = []

    def make(store: str = "") -> Deployment:
        d = Deployment(tmp_path, store)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.stop()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_reading_is_quarantined_alone_and_the_good_ones_after_it_reach_the_hub(deployment, case):
    make, codes = HOSTILE[case]
    hostile = make()
    d = deployment()
    d.send_hostile(hostile)
    d.send_good(["esp32-0001", "esp32-0002", VICTIM])  # the victim's own good readings too
    d.wait_all_good_at_hub()
    d.wait_until(lambda: len(d.quarantine()) == len(hostile), what="the hostile messages quarantined")
    d.send_good(["esp32-0001", "esp32-0002", VICTIM], per_device=1)  # and the services go on
    d.wait_all_good_at_hub()
    assert d.at_hub() == d.sent  # nothing of the hostile ones
    assert d.quarantine() == [(topics.reading(VICTIM), code, len(m), hashlib.sha256(m).digest(), len(m))
                              for m, code in zip(hostile, codes)]
    d.assert_up()


def _quota_attack(deployment, policy: str):
    """200 real readings wait unsent, then four 1 MB garbage messages against a 3 MB store quota,
    through a broker with no size limit of its own (a gateway whose broker was configured by hand)."""
    d = deployment(f'[store]\nmax_bytes = 3000000\npolicy = "{policy}"\n')
    # the hub away: its broker stopped (SIGSTOP), so nothing is acknowledged and no session is lost
    os.kill(d.hub_broker.proc.pid, signal.SIGSTOP)
    try:
        d.send_good(["esp32-0001", "esp32-0002"], per_device=100)
        d.wait_until(lambda: d.at_gateway() == d.sent, what="200 readings stored at the gateway")
        garbage = [bytes([0xA0 + i]) * 1_000_000 for i in range(4)]
        d.send_hostile(garbage)
        d.wait_until(lambda: len(d.quarantine()) == 4, what="the garbage quarantined")
        time.sleep(5)  # the quota is kept every 2 s: twice at least since the garbage came
        assert d.gateway_table("SELECT what, count, reason FROM drops WHERE what <> 'quarantine'") == []
        assert d.at_gateway() == d.sent  # no real reading deleted
        assert d.gateway_table("SELECT batch_seq FROM cursors WHERE destination = 'hub'") == []  # all unsent
        # quarantined with its size and digest, and no more of it kept than a reading can have
        assert [(code, size, digest) for _, code, size, digest, _ in d.quarantine()] == [
            ("too_large", len(g), hashlib.sha256(g).digest()) for g in garbage]
        assert all(kept <= wire.MAX_MESSAGE_BYTES for *_, kept in d.quarantine())
        # ingest goes on: readings after the garbage are taken while the hub is still away
        d.send_good(["esp32-0001", "esp32-0002", VICTIM], per_device=5)
        d.wait_until(lambda: d.at_gateway() == d.sent, timeout=15, what="readings after the garbage stored")
    finally:
        os.kill(d.hub_broker.proc.pid, signal.SIGCONT)
    d.wait_all_good_at_hub()
    assert d.at_hub() == d.sent
    d.assert_up()


def test_garbage_against_the_store_quota_deletes_no_unsent_reading_under_drop_oldest(deployment):
    _quota_attack(deployment, "drop_oldest")


def test_garbage_against_the_store_quota_does_not_stop_ingest_under_refuse_new(deployment):
    _quota_attack(deployment, "refuse_new")


BAD_LEAVES = {
    # (a device message the gateway should never have let through, the code the hub refuses it with)
    "forged": (lambda w: w.message("esp32-0002", seq=900, key_of="esp32-0001"), "bad_signature"),
    "shared_value_loop": (lambda w: _unsigned_shared_value_loop(VICTIM), "not_cbor"),
    "seq_2_pow_63": (lambda w: _signed(VICTIM, 2**63, (2150, -2)), "bad_sequence"),
    "decimal_exponent_3e9": (lambda w: _signed(VICTIM, 901, (5, 3_000_000_000)), "bad_record"),
}


def test_a_bad_device_message_in_a_correctly_signed_batch_is_refused_alone_at_the_hub(deployment):
    d = deployment()
    key = serialization.load_pem_private_key(d.gateway.key_path.read_bytes(), password=None)
    crafted: dict[int, tuple[bytes, str]] = {}
    items = []
    for i, (make, code) in enumerate(BAD_LEAVES.values()):
        # the bad message in the middle of good ones from every device; batch ids far from the gateway's own
        good = [d.good(device) for device in ("esp32-0001", "esp32-0002", VICTIM)]
        bad = make(d.world)
        seq = 1_000_000 + i
        cose, _root = batch.sign(key, GATEWAY_ID, seq, int(time.time()), good[:2] + [bad] + good[2:], [])
        crafted[seq] = (bad, code)
        items.append((topics.batch(GATEWAY_ID), cose))
    publish(d.hub_broker.port, items)
    d.send_good(["esp32-0001", "esp32-0002", VICTIM])  # through the gateway, after them
    d.wait_all_good_at_hub()
    assert d.at_hub() == d.sent  # every good leaf of the crafted batches, and none of the bad ones
    # each crafted batch is kept (its signature and root are good) with its refused leaf named
    refused_leaves = dict(d.hub_table(f"SELECT seq, refused FROM batches WHERE gateway_id = '{GATEWAY_ID}'"))
    assert {seq: json.loads(refused_leaves.get(seq, "null")) for seq in crafted} == {seq: [2] for seq in crafted}
    # and the refused message alone is in `rejected`, whole, with its code and the batch and leaf it was in
    refused = d.hub_table("SELECT code, reason, payload, sha256 FROM rejected ORDER BY id")
    assert sorted(code for code, *_ in refused) == sorted(code for _, code in crafted.values())
    for seq, (bad, code) in crafted.items():
        assert any(c == code and f"{GATEWAY_ID}/{seq}, message 2" in reason and payload == bad
                   and digest == hashlib.sha256(bad).digest() for c, reason, payload, digest in refused), (seq, refused)
    d.assert_up()
