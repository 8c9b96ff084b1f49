"""The faults of a street cabinet, with real processes: the real firmware on the MicroPython unix port
sending through a real Mosquitto to `govedge gateway run`, batches to a second Mosquitto and a hub-side
subscriber that verifies every batch.

What each test holds the system to is the issue's promise: every reading a node created reaches the hub,
exactly once. A node numbers its messages without gaps while it is not rebooted, and keeps each in its
flash buffer until the gateway says it is committed; so what the hub has and what the node's buffer
still holds, together, must be every number from 0 to the highest, and no number may come in two batches.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto
from support.deploy import GatewayProcess, HubSubscriber
from support.nodes import VirtualNode


class Cabinet:
    """A gateway Pi: its Mosquitto (persistence off, as a power cut leaves a broker whose last autosave is
    gone) and `govedge gateway run`; nodes; the hub's broker and a verifying subscriber."""

    def __init__(self, tmp_path, build_dir):
        self.tmp = tmp_path
        self.build_dir = build_dir
        self.local = Mosquitto(tmp_path / "local-broker", persistence=False,
                               extra_config="max_queued_messages 0\nmax_inflight_messages 1000\n").start()
        self.hub = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
        self.registry = tmp_path / "registry.json"
        self.nodes: list[VirtualNode] = []
        self.gateway: GatewayProcess | None = None
        self.subscriber: HubSubscriber | None = None

    def node(self, device_id: str, **kw) -> VirtualNode:
        n = VirtualNode(self.tmp / device_id, self.build_dir, self.registry, device_id, self.local.port, **kw)
        self.nodes.append(n)
        return n

    def start_gateway(self, **settings) -> GatewayProcess:
        self.gateway = GatewayProcess(self.tmp / "gateway", self.registry, self.local.port, self.hub.port,
                                      **settings).start()
        self.subscriber = HubSubscriber(self.hub.port, self.registry, self.gateway.public_key)
        self.gateway.wait_for_log("ingest: subscribed")
        return self.gateway

    def power_cut(self, off_s: float = 0.3) -> None:
        """The gateway Pi loses power: its broker and the gateway die at once, with whatever the broker
        held in memory; then both boot again."""
        self.local.proc.kill()
        self.gateway.kill()
        self.local.proc.wait()
        self.local.proc = None
        time.sleep(off_s)
        self.local.start()
        self.gateway.start()

    def close(self) -> None:
        for n in self.nodes:
            n.kill()
        if self.gateway:
            self.gateway.kill()
        if self.subscriber:
            self.subscriber.close()
        self.local.stop()
        self.hub.stop()


@pytest.fixture
def cabinet(tmp_path, build_dir):
    c = Cabinet(tmp_path, build_dir)
    yield c
    c.close()


def buffered(node: VirtualNode) -> set[int]:
    """The sequence numbers a (stopped) node still holds in its flash buffer."""
    b = node.config["buffer"]
    proc = firmware.run_micropython(
        "import buffer; b = buffer.Buffer('buffer.dat', %d, %d); print(' '.join(str(s) for s, _ in b.pending))"
        % (b["slots"], b["slot_bytes"]), path=[node.build_dir], cwd=node.root)
    return {int(s) for s in proc.stdout.split()}


def account(cabinet: Cabinet, timeout: float = 60) -> dict[str, tuple[int, int, int]]:
    """Stops the nodes (their buffers stay on flash) and waits until the hub has every message no node holds
    any more; per device (created, at the hub, still buffered). Fails on a lost or twice-batched message."""
    for n in cabinet.nodes:
        n.kill()
    sub = cabinet.subscriber
    held = {n.device_id: buffered(n) for n in cabinet.nodes}

    def at_hub() -> dict[str, list[int]]:
        per: dict[str, list[int]] = {}
        for device, seq in sub.readings():
            per.setdefault(device, []).append(seq)
        return per

    def complete() -> bool:
        per = at_hub()
        return all(set(range(max(per.get(d, []) + list(held[d]) + [-1]) + 1)) <= set(per.get(d, [])) | held[d]
                   for d in held)

    deadline = time.monotonic() + timeout
    while not complete() and time.monotonic() < deadline:
        time.sleep(0.2)
    per = at_hub()
    out = {}
    for device in held:
        seqs = per.get(device, [])
        created = max(seqs + list(held[device]) + [-1]) + 1
        lost = sorted(set(range(created)) - set(seqs) - held[device])
        assert not lost, f"{device}: {len(lost)} of {created} messages lost: {lost[:20]}"
        assert len(seqs) == len(set(seqs)), f"{device}: a message came in two batches"
        out[device] = (created, len(seqs), len(held[device]))
    assert not sub.errors, sub.errors
    return out


def test_power_cuts_of_the_gateway_pi_lose_no_reading_a_node_created(cabinet):
    cuts = int(os.environ.get("GOVEDGE_POWER_CUTS", "6"))
    rng = random.Random(13)
    for i in range(2):
        cabinet.node(f"esp32-05{i:02d}", interval_s=0.1)
    cabinet.start_gateway(batch_interval_s=0.2, batch_max_readings=20)
    for n in cabinet.nodes:
        n.start()
    for _ in range(cuts):
        time.sleep(rng.uniform(0.5, 2.0))
        cabinet.power_cut()
    time.sleep(3)  # the nodes find the broker again and send what waits in their buffers
    totals = account(cabinet)
    assert all(created > 10 for created, _, _ in totals.values()), totals
