"""The gateway's serial ingest (govedge.gateway.serial_ingest) against the real node
firmware under MicroPython, over a simulated serial cable.

The cable is two pseudo-terminals bridged by a thread. SerialIngest opens its port
with pyserial by path, as on the Pi, and a pty master has no path on Linux
(os.ttyname of it says /dev/ptmx, and opening that makes a new, unrelated pty), so
the node and the gateway each get a pty slave, a real tty device, and the bridge
copies between the two masters. The
alternatives were worse: handing pyserial a ready fd means setting private
attributes of serial.Serial, and serial_for_url("socket://...") goes through
another code path than the Pi's serialposix. The bridge is also where the tests
put noise on the line and pull the plug.

The gateway's side of the cable is named by a symlink, as udev names a USB serial
adapter under /dev/serial/by-id/: it goes away when the adapter is unplugged and
comes back, pointing at a new tty, when it is plugged in again (a pty's own
/dev/pts number is the kernel's choice, so the same path cannot be reopened).
"""

from __future__ import annotations

import binascii

import logging
import os
import pty
import queue
import random
import select
import threading
import time
import tty
from collections import Counter
from pathlib import Path

import pytest

from govedge.core import serialframe, wire
from govedge.gateway.serial_ingest import SerialIngest
from govedge.core.registry import Registry
from support.nodes import VirtualNode
from support import cose_sign1, lookup, private_key, scalar, senml, wait_until

DEVICE = "esp32-0011"




class Cable:
    """A serial cable from a node's UART to the gateway's USB serial adapter."""

    def __init__(self, folder: Path, noise: bool = False, damage_frame: int | None = None):
        self.node_master, self.node_slave = pty.openpty()
        tty.setraw(self.node_slave)
        self.node_port = os.ttyname(self.node_slave)
        self.gateway_port = str(folder / "serial-by-id" / "usb-govedge-node")
        Path(self.gateway_port).parent.mkdir(parents=True, exist_ok=True)
        self.noise = noise
        self.damage_frame = damage_frame  # this frame from the node (0 the first) gets one byte flipped
        self.frames_passed = 0
        self.frame_pos = 0
        self.rng = random.Random(11)
        self.noise_bursts = 0
        self.acks: list[int] = []  # the sequence numbers the node was sent acks for, off the wire
        self.refusals: list[int] = []  # the CRC-32s of the messages the node was told are refused
        self.lock = threading.Lock()
        self.adapter: tuple[int, int] | None = None  # (master, slave) while plugged in
        self.plug()
        os.set_blocking(self.node_master, False)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def plug(self):
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)  # a full tty queue drops bytes, as a UART overrun does
        tmp = self.gateway_port + ".new"
        os.symlink(os.ttyname(slave), tmp)
        with self.lock:
            self.adapter = (master, slave)
            os.replace(tmp, self.gateway_port)

    def unplug(self):
        with self.lock:
            os.unlink(self.gateway_port)
            for fd in self.adapter:
                os.close(fd)
            self.adapter = None

    def _run(self):
        acks = serialframe.Deframer()
        last = 0  # the last byte passed to the gateway
        while self.running:
            with self.lock:
                fds = [self.node_master] + ([self.adapter[0]] if self.adapter else [])
                ready, _, _ = select.select(fds, [], [], 0.05)
                if self.node_master in ready:
                    data = self._read(self.node_master)
                    data, last = self._line(data, last)
                    if self.adapter:  # unplugged, the bytes go nowhere
                        self._write(self.adapter[0], data)
                if self.adapter and self.adapter[0] in ready:
                    data = self._read(self.adapter[0])
                    self._write(self.node_master, data)
                    for m in acks.feed(data):
                        if m[0] == 6:
                            self.acks.append(int.from_bytes(m[1:], "big"))
                        elif m[0] == 0x15:
                            self.refusals.append(int.from_bytes(m[1:], "little"))

    def _line(self, data: bytes, last: int) -> tuple[bytes, int]:
        """What the line does to the node's bytes on their way to the gateway."""
        out = bytearray()
        for b in data:
            if b != 0:
                self.frame_pos += 1
                if self.frames_passed == self.damage_frame and self.frame_pos == 10:
                    b = (b ^ 0x55) or 0x01  # still no 0x00: the frame keeps its length, loses its CRC
            out.append(b)
            if b == 0 and last != 0:  # a frame's closing 0x00
                self.frames_passed += 1
                self.frame_pos = 0
                if self.noise:
                    # before the node's idle 0x00 that opens the next frame: noise between frames
                    out += bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 24)))
                    self.noise_bursts += 1
            last = b
        return bytes(out), last

    @staticmethod
    def _read(fd) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return b""

    @staticmethod
    def _write(fd, data: bytes):
        try:
            os.write(fd, data)
        except (BlockingIOError, OSError):
            pass

    def close(self):
        self.running = False
        self.thread.join(2)
        if self.adapter:
            self.unplug()
        os.close(self.node_master)
        os.close(self.node_slave)


class Committer:
    """The gateway's pipeline in miniature: verify, commit (to a list), then acknowledge."""

    def __init__(self, inbox: queue.Queue, keys):
        self.inbox = inbox
        self.keys = keys
        self.committed: list[tuple[str, wire.Reading]] = []
        self.repeats: list[int] = []
        self.quarantined: list[tuple[str, str]] = []
        self.acked: list[int] = []  # the sequence numbers of the items acknowledged, in order
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                item = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                reading = wire.verify(item.payload, self.keys)
            except wire.WireError as exc:
                self.quarantined.append((item.source, exc.code))
            else:
                if self.committed and reading.seq <= max(r.seq for _, r in self.committed):
                    self.repeats.append(reading.seq)  # the gateway keeps the first copy
                else:
                    self.committed.append((item.source, reading))
                self.acked.append(reading.seq)
            item.ack()

    def seqs(self, kind: str = "reading") -> list[int]:
        return [r.seq for source, r in self.committed if source.endswith("/" + kind)]

    def close(self):
        self.running = False
        self.thread.join(2)


@pytest.fixture
def wired(tmp_path, build_dir):
    """A node wired to a SerialIngest: yields (node, cable, ingest, committer, counters)."""
    started = []

    def make(noise=False, damage_frame=None, reopen_s=3.0):
        cable = Cable(tmp_path, noise=noise, damage_frame=damage_frame)
        started.append(cable.close)
        node = VirtualNode(tmp_path / DEVICE, build_dir, tmp_path / "registry.json", DEVICE, 1883,
                           sensors=("bme280",), transport="serial", serial={"port": cable.node_port})
        node.config.pop("mqtt", None)
        node.write_config()
        inbox, counters = queue.Queue(), Counter()
        committer = Committer(inbox, Registry.load(tmp_path / "registry.json"))
        started.append(committer.close)
        ingest = SerialIngest(cable.gateway_port, 115200, inbox, counters, reopen_s=reopen_s)
        ingest.start()
        started.append(ingest.stop)
        node.start()
        started.append(node.kill)
        return node, cable, ingest, committer, counters

    yield make
    for close in reversed(started):
        close()


def assert_nothing_missing(committer: Committer):
    """Every message the node signed from the first to the last that came is there, once, in order."""
    readings = committer.seqs("reading")
    assert readings == sorted(set(readings))
    everything = sorted(readings + committer.seqs("status"))
    assert everything == list(range(everything[0], everything[-1] + 1))


def test_every_reading_the_wired_node_signs_arrives_in_order_each_acknowledged_once(wired):
    node, cable, ingest, committer, counters = wired()
    wait_until(lambda: len(committer.seqs()) >= 8, what="8 readings committed", detail=lambda: node.log)
    node.kill()
    wait_until(lambda: cable.acks == committer.acked and ingest.inbox.empty(), what="every ack on the wire")

    assert_nothing_missing(committer)
    assert committer.repeats == [], "nothing needed sending twice"
    assert cable.acks == [r.seq for _, r in committer.committed]
    assert committer.seqs("status"), "status records come over the wire too"
    sources = {source for source, _ in committer.committed}
    assert sources == {f"serial:{cable.gateway_port}/reading", f"serial:{cable.gateway_port}/status"}
    assert counters["serial_frames"] == len(committer.committed)
    assert counters["serial_bad_crc"] == counters["serial_bad_cobs"] == counters["serial_port_errors"] == 0


def test_line_noise_between_frames_is_counted_and_costs_no_reading(wired):
    node, cable, ingest, committer, counters = wired(noise=True)
    wait_until(lambda: len(committer.seqs()) >= 8, what="8 readings committed", detail=lambda: node.log)
    node.kill()
    wait_until(lambda: cable.acks == committer.acked and ingest.inbox.empty(), what="every ack on the wire")

    assert cable.noise_bursts >= 8
    assert counters["serial_bad_crc"] + counters["serial_bad_cobs"] > 0, "the noise was seen and dropped"
    assert counters["serial_bytes_discarded"] > 0
    assert_nothing_missing(committer)
    assert committer.repeats == [], "no frame was lost to the noise"
    assert counters["serial_frames"] == len(committer.committed)


def test_frame_damaged_on_the_line_is_dropped_and_the_node_sends_it_again(wired):
    node, cable, ingest, committer, counters = wired(damage_frame=3)
    node.wait_for_log(r"uplink: gateway did not acknowledge message \d+", timeout=20)
    before = len(committer.seqs())
    wait_until(lambda: len(committer.seqs()) >= before + 3, what="3 more readings after the resend",
               detail=lambda: node.log)
    node.kill()
    wait_until(lambda: cable.acks == committer.acked and ingest.inbox.empty(), what="every ack on the wire")

    assert counters["serial_bad_crc"] + counters["serial_bad_cobs"] == 1
    assert_nothing_missing(committer)
    assert committer.repeats == [], "the damaged frame never reached the pipeline"
    assert cable.acks == [r.seq for _, r in committer.committed]


def test_unplugged_adapter_is_logged_once_and_the_ingest_takes_it_back_when_replugged(wired, caplog):
    caplog.set_level(logging.INFO, logger="govedge.gateway")
    node, cable, ingest, committer, counters = wired(reopen_s=0.2)
    wait_until(lambda: len(committer.seqs()) >= 3, what="3 readings committed", detail=lambda: node.log)

    cable.unplug()
    wait_until(lambda: "port lost" in caplog.text, what="the lost port logged")
    # the node's 3 s wait for its ack: meanwhile the ingest tried to reopen about 15 times
    node.wait_for_log(r"uplink: gateway did not acknowledge message \d+", timeout=20)
    before = len(committer.seqs())
    assert ingest.running

    cable.plug()
    wait_until(lambda: len(committer.seqs()) >= before + 5, what="5 more readings after the replug",
               detail=lambda: node.log)

    assert ingest.running
    messages = [r.getMessage() for r in caplog.records if r.name == "govedge.gateway"]
    assert len([m for m in messages if "port lost" in m]) == 1, messages
    assert not [m for m in messages if "cannot open" in m], "failed reopens are not logged one by one"
    assert len([m for m in messages if "open again" in m]) == 1, messages
    assert counters["serial_port_errors"] == 1
    # what the node signed while unplugged waited in its buffer and came after the replug
    assert_nothing_missing(committer)


def test_port_missing_at_start_is_logged_once_and_opened_when_it_appears(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="govedge.gateway")
    cable = Cable(tmp_path)
    cable.unplug()
    inbox, counters = queue.Queue(), Counter()
    ingest = SerialIngest(cable.gateway_port, 115200, inbox, counters, reopen_s=0.05)
    ingest.start()
    try:
        wait_until(lambda: "cannot open" in caplog.text, what="the missing port logged")
        cable.plug()
        wait_until(lambda: "open at" in caplog.text, what="the port opened once it appeared")
        key = private_key(scalar("wired"))
        os.write(cable.node_slave, b"\x00" + serialframe.encode(b"\x01" + cose_sign1(key, senml(seq=5))))
        item = inbox.get(timeout=10)
    finally:
        ingest.stop()
        cable.close()
    assert item.source == f"serial:{cable.gateway_port}/reading"
    assert wire.decode_unverified(item.payload).seq == 5
    assert len([r for r in caplog.records if "cannot open" in r.getMessage()]) == 1, "not once per try"
    assert counters["serial_port_errors"] == 1
    assert not ingest.running


def test_foreign_frames_are_dropped_and_undecodable_messages_quarantined_and_refused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="govedge.gateway")
    cable = Cable(tmp_path)
    key = private_key(scalar("wired"))
    inbox, counters = queue.Queue(), Counter()
    committer = Committer(inbox, lookup(key.public_key()))
    ingest = SerialIngest(cable.gateway_port, 115200, inbox, counters)
    ingest.start()
    try:
        wait_until(lambda: "open at" in caplog.text, what="the port open")
        for message in (b"\x07" + cose_sign1(key, senml(seq=1)),  # a kind the gateway does not know
                        b"\x01" + b"not a signed reading",
                        b"\x02" + cose_sign1(key, senml(seq=2))):
            os.write(cable.node_slave, b"\x00" + serialframe.encode(message))
        wait_until(lambda: cable.acks == [2] and cable.refusals, what="the ack of the status record and the refusal")
    finally:
        ingest.stop()
        committer.close()
        cable.close()
    assert counters["serial_bad_kind"] == 1
    assert counters["serial_frames"] == 3
    assert committer.quarantined == [(f"serial:{cable.gateway_port}/reading", "not_cbor")]
    assert [(source, r.seq) for source, r in committer.committed] == [(f"serial:{cable.gateway_port}/status", 2)]
    assert cable.acks == [2], "the undecodable message has no sequence number to acknowledge"
    # it is refused by its frame's CRC-32 instead, so that the node goes on with its next message
    assert cable.refusals == [binascii.crc32(b"\x01" + b"not a signed reading")]


def test_ack_for_a_port_that_went_away_is_counted_not_raised(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="govedge.gateway")
    cable = Cable(tmp_path)
    key = private_key(scalar("wired"))
    inbox, counters = queue.Queue(), Counter()
    ingest = SerialIngest(cable.gateway_port, 115200, inbox, counters, reopen_s=0.05)
    ingest.start()
    try:
        wait_until(lambda: "open at" in caplog.text, what="the port open")
        os.write(cable.node_slave, b"\x00" + serialframe.encode(b"\x01" + cose_sign1(key, senml(seq=9))))
        item = inbox.get(timeout=10)
        cable.unplug()
        wait_until(lambda: counters["serial_port_errors"] == 1, what="the lost port noticed")
        item.ack()  # the gateway's commit loop goes on
    finally:
        ingest.stop()
        cable.close()
    assert counters["serial_acks_unsent"] == 1
    assert "acknowledgement of message 9 not sent" in caplog.text
