"""The faults of a street cabinet, with real processes: the real firmware on the MicroPython unix port
sending through a real Mosquitto to `govedge gateway run`, batches to the hub's Mosquitto and `govedge hub
run`, which verifies and stores them.

What each test holds the system to is the issue's promise: every reading a node created reaches the hub,
exactly once. A node numbers its messages without gaps while it runs (a reboot may skip the numbers of
the block it had reserved), and keeps each in its flash buffer until the gateway says it is committed; so
what the hub has and what the nodes' buffers still hold, together, must be every number from 0 to the
highest but those a reboot skipped.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import time

import pytest

from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto
from support.deploy import GATEWAY_ID, GatewayProcess
from support.hubkit import HubProcess, hub_beside
from support.nodes import VirtualNode

SOAK = os.environ.get("GOVEDGE_SOAK") == "1"


class Cabinet:
    """A gateway Pi: its Mosquitto (persistence off, as a power cut leaves a broker whose last autosave is
    gone) and `govedge gateway run`; nodes; the hub's broker and `govedge hub run` with its SQLite store."""

    def __init__(self, tmp_path, build_dir):
        self.tmp = tmp_path
        self.build_dir = build_dir
        self.local = Mosquitto(tmp_path / "local-broker", persistence=False,
                               extra_config="max_queued_messages 0\nmax_inflight_messages 1000\n").start()
        self.hub = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
        self.registry = tmp_path / "registry.json"
        self.nodes: list[VirtualNode] = []
        self.gateway: GatewayProcess | None = None
        self.hub_process: HubProcess | None = None
        self.hub_db = tmp_path / "hub" / "hub.db"

    def node(self, device_id: str, **kw) -> VirtualNode:
        n = VirtualNode(self.tmp / device_id, self.build_dir, self.registry, device_id, self.local.port, **kw)
        self.nodes.append(n)
        return n

    def start_gateway(self, **settings) -> GatewayProcess:
        """The gateway, known to the hub, and the hub; nodes are made before (the registry is read once)."""
        self.gateway = GatewayProcess(self.tmp / "gateway", self.registry, self.local.port, self.hub.port,
                                      **settings)
        self.hub_process = hub_beside(self.hub_db.parent, self.registry, GATEWAY_ID, self.gateway.public_key,
                                      self.hub.port, client_id="hub-worker-1").start()
        self.hub_process.wait_subscribed()
        self.gateway.start()
        # the gateway's persistent session must exist before nodes publish
        self.gateway.wait_for_log("ingest: subscribed")
        return self.gateway

    def at_hub(self) -> dict[str, list[int]]:
        """Per device, the sequence numbers the hub stored."""
        if not self.hub_db.exists():
            return {}
        with sqlite3.connect(f"file:{self.hub_db}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute("SELECT device_id, seq FROM readings").fetchall()
        per: dict[str, list[int]] = {}
        for device, seq in rows:
            per.setdefault(device, []).append(seq)
        return per

    def hub_copies(self) -> int:
        """Messages the hub got in more than one batch (it stores each once): repeats on the way."""
        with sqlite3.connect(f"file:{self.hub_db}?mode=ro", uri=True, timeout=10) as db:
            (batched,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM batches WHERE mode = 'raw'").fetchone()
            (stored,) = db.execute("SELECT COUNT(*) FROM readings").fetchone()
        return batched - stored

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
        if self.hub_process:
            self.hub_process.kill()
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


def skipped_at_boot(node: VirtualNode) -> set[int]:
    """Numbers a node may have skipped: each boot after the first starts at its reserved block's end
    ("seq from N"), and the numbers below N since the last message before it were never used (the tests
    reserve one number at a time, seq_block = 1: a kill between taking a number and buffering the
    message skips that one)."""
    starts = [int(m) for m in re.findall(r"up: seq from (\d+)", node.log)]
    return {n for start in starts[1:] for n in range(max(0, start - node.config["seq_block"]), start)}


def account(cabinet: Cabinet, timeout: float = 90, excused: set[tuple[str, int]] = frozenset()
            ) -> dict[str, dict[str, int]]:
    """Stops the nodes (their buffers stay on flash) and waits until the hub has every message no node holds
    any more; per device: created, at the hub, still buffered, lost. Fails on a lost message that is not
    ``excused`` (device, seq)."""
    for n in cabinet.nodes:
        n.kill()
    held = {n.device_id: buffered(n) for n in cabinet.nodes}
    skipped = {n.device_id: skipped_at_boot(n) for n in cabinet.nodes}

    def missing() -> dict[str, list[int]]:
        per = cabinet.at_hub()
        out = {}
        for device in held:
            have = set(per.get(device, [])) | held[device]
            top = max(have | {-1})
            out[device] = sorted(set(range(top + 1)) - have - skipped[device]
                                 - {seq for d, seq in excused if d == device})
        return out

    deadline = time.monotonic() + timeout
    while any(missing().values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    per, lost = cabinet.at_hub(), missing()
    totals = {}
    for device in held:
        seqs = per.get(device, [])
        created = max(set(seqs) | held[device] | {-1}) + 1 - len(skipped[device] - set(seqs) - held[device])
        totals[device] = {"created": created, "at_hub": len(seqs), "buffered": len(held[device] - set(seqs)),
                          "lost": len(lost[device])}
    assert not any(lost.values()), f"lost: { {d: v[:20] for d, v in lost.items() if v} }, {totals}"
    return totals


def test_power_cuts_of_the_gateway_pi_lose_no_reading_a_node_created(cabinet):
    cuts = int(os.environ.get("GOVEDGE_POWER_CUTS", "6"))
    rng = random.Random(13)
    for i in range(2):
        cabinet.node(f"esp32-05{i:02d}", interval_s=0.1, seq_block=1)
    cabinet.start_gateway(batch_interval_s=0.2, batch_max_readings=20)
    for n in cabinet.nodes:
        n.start()
    for _ in range(cuts):
        time.sleep(rng.uniform(0.5, 2.0))
        cabinet.power_cut()
    time.sleep(3)  # the nodes find the broker again and send what waits in their buffers
    totals = account(cabinet)
    assert all(t["created"] > 10 for t in totals.values()), totals


def test_a_new_sd_card_mid_run_costs_only_what_the_old_card_held_unsent(cabinet):
    """The gateway's store is gone (the SD card replaced) while nodes send: the fresh store's batches are
    taken by the hub beside the old one's (no conflicting_batch), and what is lost is at most what only the
    old card held (committed and acknowledged to the nodes, not yet confirmed by the hub)."""
    for i in range(2):
        cabinet.node(f"esp32-07{i:02d}", interval_s=0.1, seq_block=1)
    gw = cabinet.start_gateway(batch_interval_s=0.5, batch_max_readings=20)
    for n in cabinet.nodes:
        n.start()
    time.sleep(4)
    gw.kill()
    with sqlite3.connect(gw.folder / "data" / "gateway.db") as db:  # what the card held the hub had not confirmed
        (cursor,) = db.execute("SELECT COALESCE(MAX(batch_seq), -1) FROM cursors WHERE destination = 'hub'"
                               ).fetchone()
        only_on_card = set(db.execute("SELECT device_id, seq FROM readings WHERE batch_seq IS NULL OR batch_seq > ?",
                                      (cursor,)).fetchall())
    shutil.rmtree(gw.folder / "data")
    gw.start()
    time.sleep(4)
    totals = account(cabinet, excused=only_on_card)
    with sqlite3.connect(f"file:{cabinet.hub_db}?mode=ro", uri=True) as db:
        assert db.execute("SELECT code, reason FROM rejected").fetchall() == []
        stores = db.execute("SELECT COUNT(DISTINCT store_id) FROM batches").fetchone()[0]
    assert stores == 2
    assert all(t["created"] > 20 for t in totals.values()), totals


@pytest.mark.soak
def test_soak_random_kills_of_every_part_lose_nothing(cabinet):
    """Kills of random parts (the gateway Pi's power, the gateway alone, a node, the hub, the hub's broker)
    while nodes send; then one line: messages created, at the hub, lost, duplicated. GOVEDGE_SOAK=1: 30
    minutes and well over a hundred kills; else a short run."""
    seconds = 1800 if SOAK else 25
    rng = random.Random(int(os.environ.get("GOVEDGE_SOAK_SEED", "29")))
    for i in range(3):
        cabinet.node(f"esp32-06{i:02d}", interval_s=0.1, seq_block=1)
    cabinet.start_gateway(batch_interval_s=0.2, batch_max_readings=20)
    for n in cabinet.nodes:
        n.start()
    kills: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 6.0) if SOAK else rng.uniform(0.5, 3.0))
        part = rng.choice(["power", "gateway", "node", "hub", "hub_broker"])
        kills[part] = kills.get(part, 0) + 1
        if part == "power":
            cabinet.power_cut()
        elif part == "gateway":
            cabinet.gateway.kill()
            cabinet.gateway.start()
        elif part == "node":
            node = rng.choice(cabinet.nodes)
            node.kill()
            node.start()
        elif part == "hub":
            cabinet.hub_process.kill()
            cabinet.hub_process.start()
        else:
            cabinet.hub.proc.kill()
            cabinet.hub.proc.wait()
            cabinet.hub.proc = None
            cabinet.hub.start()
    time.sleep(3)
    totals = account(cabinet, timeout=180)
    # the hub stores a (device, sequence number) once: "duplicated" counts the copies it was sent and dropped
    line = "soak: {} kills ({}); readings created {}, at the hub {}, lost {}, duplicated {}".format(
        sum(kills.values()), ", ".join(f"{k} {v}" for k, v in sorted(kills.items())),
        sum(t["created"] for t in totals.values()), sum(t["at_hub"] for t in totals.values()),
        sum(t["lost"] for t in totals.values()), cabinet.hub_copies())
    print(line)
    if SOAK:
        assert sum(kills.values()) > 100, line
