"""A full disk never ends the gateway and never loses what it held: a commit that fails is rolled back,
its messages are not acknowledged and are committed once there is room again; below its reserve of free
space the gateway stops acknowledging before SQLite hits the wall, says why in status and metrics, frees
what the quota may free, and goes on by itself once space returns.

The first test is the smallest fault: one commit failing with SQLITE_FULL, on the real service object fed
through its inbox (as test_gateway_isolation). The others fill a small real file system (a tmpfs of a few
MB, mounted by the test: it needs root, and skips without) under `govedge gateway run`, with real brokers,
signed readings and a hub-side subscriber verifying every batch; the filler file is then deleted.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from govedge.core import topics
from govedge.gateway import health
from govedge.gateway import store as gwstore
from govedge.tools.dev.broker import Mosquitto, free_port
from support import wait_until
from support.deploy import GatewayProcess, HubSubscriber
from support.hubkit import World, publish
from test_gateway_isolation import Acks, make_gateway, rows

FULL = "database or disk is full"


def test_a_commit_failing_with_sqlite_full_acknowledges_nothing_and_commits_the_messages_later(tmp_path):
    world = World(tmp_path / "world", devices=2)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    a, b = world.devices
    messages = [(a, world.message(a)), (b, world.message(b)), (a, world.message(a)), (b, world.message(b))]
    original = gwstore.Store.add_reading
    full = {"on": True, "failed": 0}

    def disk_full(self, device_id, *args):  # the disk fills under the second message of the commit
        if full["on"] and device_id == b:
            full["failed"] += 1
            raise sqlite3.OperationalError(FULL)
        return original(self, device_id, *args)

    gwstore.Store.add_reading = disk_full
    try:
        for d, m in messages:
            gw.inbox.put(acks.inbound(topics.reading(d), m))
        for _ in range(5):  # the gateway goes on: each pass tries again, nothing raises
            gw.drain(0.0)
        assert full["failed"] >= 1
        assert acks.acked == []  # nothing acknowledged, neither the message that failed nor those with it
        assert rows(gw, "SELECT count(*) FROM readings") == [(0,)]  # rolled back whole
        assert rows(gw, "SELECT count(*) FROM quarantine") == [(0,)]  # a full disk is no fault of a message
        full["on"] = False  # space returns
        gw.room.retry_s = 0.0
        for _ in range(5):
            gw.drain(0.0)
    finally:
        gwstore.Store.add_reading = original
    assert sorted(acks.acked) == sorted(m for _, m in messages)  # each acknowledged once, after its commit
    assert sorted(rows(gw, "SELECT device_id, seq FROM readings")) == [(a, 0), (a, 1), (b, 0), (b, 1)]
    assert rows(gw, "SELECT count(*) FROM quarantine") == [(0,)]
    assert gw.batcher.waiting == 4


# -- a small real file system under the running gateway ------------------------------------------------

DISK_MB = 6


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of DISK_MB MB mounted where the gateway's data_dir will be, unmounted afterwards; skips
    without root."""
    mount = tmp_path / "gw" / "data"
    mount.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs failed: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A filler file that takes the file system's free space down to ``leave`` bytes (or as near as its
    pages allow)."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            while True:
                st = os.statvfs(folder)
                if st.f_bavail * st.f_frsize - chunk < leave:
                    break
                try:
                    f.write(b"\0" * chunk)
                    f.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    f.truncate(f.tell())
                    break
    return filler


class OnSmallDisk:
    """`govedge gateway run` with its data_dir on the small disk, real local and hub brokers, a hub-side
    subscriber verifying every batch, the metrics endpoint on."""

    def __init__(self, tmp_path: Path, disk: Path, min_free_mb: float):
        self.world = World(tmp_path / "world", devices=2)
        self.local = Mosquitto(tmp_path / "local-broker").start()
        self.hub = Mosquitto(tmp_path / "hub-broker").start()
        self.disk = disk
        self.metrics_port = free_port()
        self.gw = GatewayProcess(disk.parent, self.world.folder / "registry.json", self.local.port, self.hub.port,
                                 batch_interval_s=0.2, batch_max_readings=50,
                                 extra=f"[store]\nmin_free_mb = {min_free_mb}\n"
                                       f"[metrics]\nport = {self.metrics_port}\n"
                                       # status's exit code is about the disk here, not this machine's NTP
                                       '[verify]\nclock_synchronized = "yes"\n')
        self.toml = disk.parent / "gateway.toml"
        self.sub = HubSubscriber(self.hub.port, self.world.folder / "registry.json", self.gw.public_key)
        self.sent: list[tuple[str, int]] = []
        self.gw.start()
        wait_until(lambda: self.live("ingest").startswith("subscribed"), what="ingest subscribed",
                   detail=lambda: self.gw.log[-2000:])
        wait_until(lambda: self.live("uplink").startswith("connected"), what="uplink connected")

    def live(self, part: str) -> str:
        doc = health.live(self.disk) or {"parts": {}}
        return doc["parts"].get(part, {}).get("state", "")

    def send(self, n: int) -> None:
        """``n`` readings of each device, published to the local broker (QoS 1: the broker has them)."""
        items = []
        for device in self.world.devices:
            for _ in range(n):
                self.sent.append((device, self.world.next_seq[device]))
                items.append((topics.reading(device), self.world.message(device)))
        publish(self.local.port, items)

    def stored(self) -> int:
        """Readings the store has committed (its last sequence numbers: delivered ones may be pruned)."""
        db = sqlite3.connect(f"file:{self.disk / 'gateway.db'}?mode=ro", uri=True)
        try:
            return sum(seq + 1 for (seq,) in db.execute("SELECT last_seq FROM devices"))
        finally:
            db.close()

    def status(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "gateway", "status", "--config",
                               str(self.toml)], capture_output=True, text=True, timeout=60)

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return next(float(x.split()[1]) for x in text.splitlines() if x.split()[:1] == [name])

    def alive(self) -> bool:
        return self.gw.proc.poll() is None

    def close(self):
        self.gw.stop()
        self.sub.close()
        self.local.stop()
        self.hub.stop()


@pytest.fixture
def on_small_disk(tmp_path, small_disk):
    made = []

    def make(min_free_mb: float):
        made.append(OnSmallDisk(tmp_path, small_disk, min_free_mb))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def test_below_its_reserve_the_gateway_stops_acknowledging_says_why_and_recovers_by_itself_losing_nothing(
        on_small_disk):
    rig = on_small_disk(min_free_mb=1)
    rig.send(3)
    wait_until(lambda: len(rig.sub.readings()) == 6, what="the first readings at the hub")
    filler = fill(rig.disk, leave=400_000)  # less than the reserve is left: the gateway still writes its state
    rig.send(5)  # the nodes keep sending: the broker holds what the gateway does not acknowledge
    wait_until(lambda: rig.live("store").startswith("disk full:"), what="the store's state says the disk is full")
    time.sleep(2)  # several passes of the main loop with messages waiting
    assert rig.alive()
    assert rig.stored() == 6 and len(rig.sub.readings()) == 6  # nothing committed, so nothing acknowledged
    status = rig.status()
    assert status.returncode == 1, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.split()[:1] == ["store"])
    assert re.search(r"PROBLEM: disk full: 0\.\d MB free of 6\.\d MB, reserve 1\.0 MB: not acknowledging", line), line
    assert rig.metric("govedge_store_refusing") == 1
    assert rig.metric("govedge_store_free_bytes") < 1_000_000
    assert rig.metric("govedge_store_reserve_bytes") == 1_000_000
    filler.unlink()  # space returns
    wait_until(lambda: len(rig.sub.readings()) == 16, what="every reading at the hub")
    wait_until(lambda: rig.live("store").startswith("within its quota"), what="the store's state back to normal")
    assert sorted(rig.sub.readings()) == sorted(rig.sent)  # each exactly once
    assert rig.stored() == 16
    assert rig.status().returncode == 0
    assert rig.metric("govedge_store_refusing") == 0
    log = rig.gw.log
    assert log.count("store: disk full: ") == 1, log  # one line names the cause, not one per pass
    assert "store: room on disk again" in log
    assert "Traceback" not in log


def test_when_sqlite_hits_the_wall_the_gateway_stays_up_acknowledges_nothing_and_commits_it_all_later(
        on_small_disk):
    rig = on_small_disk(min_free_mb=0)  # no reserve: the disk fills to the last page under SQLite
    rig.send(3)
    wait_until(lambda: len(rig.sub.readings()) == 6, what="the first readings at the hub")
    filler = fill(rig.disk, leave=0)
    rig.send(5)
    wait_until(lambda: "a commit failed" in rig.gw.log, what="a commit failing for want of room",
               detail=lambda: rig.gw.log[-3000:])
    time.sleep(2)
    assert rig.alive()
    assert rig.stored() == 6 and len(rig.sub.readings()) == 6  # the failed commits acknowledged nothing
    assert rig.metric("govedge_store_refusing") == 1
    rig.gw.stop()  # systemd restarts it on the full disk: it starts and waits, it does not loop
    rig.gw.start()
    time.sleep(3)
    assert rig.alive()
    rig.send(1)
    filler.unlink()
    wait_until(lambda: len(rig.sub.readings()) == 18, what="every reading at the hub",
               detail=lambda: rig.gw.log[-3000:])
    assert sorted(rig.sub.readings()) == sorted(rig.sent)  # each exactly once
    assert rig.stored() == 18
    wait_until(lambda: rig.live("store").startswith("within its quota"), what="live.json written again")
    assert "Traceback" not in rig.gw.log


def test_live_state_a_write_the_full_disk_refused_is_done_again_even_if_the_state_did_not_change(small_disk):
    live = health.LiveState(small_disk, "gw-live", 1)
    live.set("store", "within its quota", True)
    filler = fill(small_disk, leave=0)
    live.set("uplink", "connected to the hub", True)  # live.json cannot be written: no exception, no half file
    assert live.unwritten and "No space left" in live.unwritten
    assert health.live(small_disk)["parts"].keys() == {"store"}
    assert not (small_disk / "live.tmp").exists()
    filler.unlink()
    live.set("uplink", "connected to the hub", True)  # the same state: written all the same
    assert live.unwritten is None
    assert health.live(small_disk)["parts"]["uplink"]["state"] == "connected to the hub"
    fill(small_disk, leave=0)
    live.set("ingest", "subscribed", True)
    (small_disk / "filler").unlink()
    live.retry()  # the next housekeeping pass, with no new state at all
    assert health.live(small_disk)["parts"]["ingest"]["state"] == "subscribed"


def test_the_quota_counts_the_wal_and_the_shm_beside_the_database(tmp_path):
    world = World(tmp_path / "world", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    (device,) = world.devices
    for _ in range(20):
        gw.inbox.put(Acks().inbound(topics.reading(device), world.message(device)))
    while not gw.inbox.empty() or gw.in_flight:
        gw.drain(0.0)
    wal = gw.store.wal_bytes()
    assert wal > 0 and gw.quota.used_bytes() == gw.store.used_bytes() + wal
    assert gw.store.checkpoint() and gw.store.wal_bytes() < wal  # a checkpoint gives the WAL's space back
