"""Nodes wired to the gateway: the real firmware under MicroPython writes framed
signed messages to a pseudo-terminal (the simulated serial line); the gateway's
side reads them with govedge.core.serialframe and acknowledges what it has."""

from __future__ import annotations

import binascii
import os
import pty
import random
import select
import threading
import time
import tty

from govedge.core import serialframe, wire
from govedge.core.registry import Registry
from support.nodes import VirtualNode

ACK = b"\x06"


class WiredGateway:
    """The gateway's end of the wire: deframe, verify, acknowledge (or, when told, not)."""

    def __init__(self, registry_path, lose_acks=(), noise=False, refuse=()):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.registry_path = registry_path
        self.lose_acks = set(lose_acks)  # which messages (1st, 2nd, ...) get no answer
        self.refuse = set(refuse)  # which get the refusal an undecodable message gets
        self.noise = noise
        self.received: list[tuple[int, wire.Reading]] = []
        self.deframer = serialframe.Deframer()
        self.rng = random.Random(7)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        registry = None
        count = 0
        while self.running:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for body in self.deframer.feed(data):
                registry = registry or Registry.load(self.registry_path)
                kind, reading = body[0], wire.verify(body[1:], registry)
                self.received.append((kind, reading))
                count += 1
                if self.noise:  # line noise before the answer; the node must find the ack anyway
                    os.write(self.master, bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 20))))
                if count in self.lose_acks:
                    continue
                if count in self.refuse:
                    crc = binascii.crc32(body).to_bytes(4, "little")
                    os.write(self.master, b"\x00" + serialframe.encode(b"\x15" + crc))
                    continue
                os.write(self.master, b"\x00" + serialframe.encode(ACK + reading.seq.to_bytes(8, "big")))

    def seqs(self, kind=1):
        return [r.seq for k, r in self.received if k == kind]

    def close(self):
        self.running = False
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


def _wired_node(tmp_path, build_dir, gateway, **kw):
    node = VirtualNode(tmp_path / "esp32-0009", build_dir, tmp_path / "registry.json", "esp32-0009", 1883,
                       sensors=("bme280",), transport="serial", serial={"port": gateway.port}, **kw)
    node.config.pop("mqtt", None)
    node.write_config()
    return node


def test_wired_node_delivers_every_reading_once_acknowledged(tmp_path, build_dir):
    gateway = WiredGateway(tmp_path / "registry.json")
    node = _wired_node(tmp_path, build_dir, gateway).start()
    try:
        deadline = time.time() + 30
        while len(gateway.seqs()) < 8 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        node.kill()
        gateway.close()
    seqs = gateway.seqs()
    assert len(seqs) >= 8, node.log
    assert seqs == sorted(set(seqs))
    assert gateway.deframer.frames_bad_crc == gateway.deframer.frames_bad_cobs == 0
    assert gateway.seqs(kind=2), "the status record goes over the wire too"


def test_unacknowledged_message_is_sent_again_and_noise_does_not_confuse_the_node(tmp_path, build_dir):
    gateway = WiredGateway(tmp_path / "registry.json", lose_acks={3, 9}, noise=True)
    node = _wired_node(tmp_path, build_dir, gateway).start()
    try:
        node.wait_for_log(r"uplink: gateway did not acknowledge message \d+ within 3000 ms", timeout=30)
        node.wait_for_log(r"uplink: buffer sent", timeout=30)
    finally:
        node.kill()
        gateway.close()
    seqs = gateway.seqs()
    firsts = sorted(set(seqs))
    # the message whose ack was lost came again; nothing was skipped in between
    assert len(seqs) > len(firsts)
    assert [s for s in seqs if seqs.count(s) > 1]
    everything = sorted(set(seqs) | set(gateway.seqs(kind=2)))
    assert everything == list(range(everything[0], everything[-1] + 1))


def test_a_refused_message_is_done_with_and_the_node_goes_on_with_the_next(tmp_path, build_dir):
    # the gateway refuses (by the frame's CRC-32) a message it cannot read; the node must not
    # send it again and again, holding back everything behind it
    gateway = WiredGateway(tmp_path / "registry.json", refuse={2})
    node = _wired_node(tmp_path, build_dir, gateway).start()
    try:
        node.wait_for_log(r"uplink: the gateway refused message \d+ \(it keeps it in its quarantine\); going on",
                          timeout=30)
        deadline = time.time() + 30
        while len(gateway.received) < 6 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        node.kill()
        gateway.close()
    sent = [(k, r.seq) for k, r in gateway.received]
    assert len(sent) >= 6 and len(set(sent)) == len(sent), "nothing was sent twice, the refused one neither"
