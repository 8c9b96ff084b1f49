"""Registry changes reach a running gateway, tried as an operator and as an attacker would: a device
provisioned while the gateway runs loses nothing it sent before (its messages wait in
``waiting_for_registry`` and are verified again on the reload, by SIGHUP or a change of the file), a
revocation takes effect on the reload, a broken registry file keeps the one before in force, and a flood
of messages for unknown devices stays within its bound."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

from govedge.core import topics
from govedge.core.registry import Registry
from govedge.gateway import service as gwservice
from govedge.tools.dev.broker import Mosquitto
from support import firmware, scalar, sec1, wait_until
from support.deploy import GatewayProcess
from support.hubkit import World, publish

from test_gateway_isolation import Acks, drain_all, make_gateway, rows

KNOWN = "esp32-0001"
NEW = "esp32-0002"  # not in the registry until the test provisions it


def signed(device: str, seq: int, t: float | None = None) -> bytes:
    return firmware("reading").signed_reading(scalar(device), device, seq, int(t or time.time()),
                                              [("temp", "Cel", 2150)])


def provision(world: World, device: str = NEW, key_of: str | None = None) -> None:
    registry = Registry.load(world.folder / "registry.json")
    registry.add(device, "esp32", ["bme280"], sec1(scalar(key_of or device)))
    registry.save()  # renamed into place, as `govedge provision` does


def stored(gw, device: str = NEW) -> list[int]:
    return [s for (s,) in rows(gw, f"SELECT seq FROM readings WHERE device_id = '{device}' ORDER BY seq")]


def test_a_device_provisioned_while_the_gateway_runs_loses_nothing_it_sent_before(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    early = [signed(NEW, seq) for seq in range(3)]
    drain_all(gw, [acks.inbound(topics.reading(NEW), m) for m in early])
    assert len(acks.acked) == 3  # kept in the store: the broker may forget them
    assert stored(gw) == [] and rows(gw, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert rows(gw, "SELECT COUNT(*) FROM waiting_for_registry") == [(3,)]
    drain_all(gw, [acks.inbound(topics.reading(NEW), early[0])])  # delivered again: waits once
    assert rows(gw, "SELECT COUNT(*) FROM waiting_for_registry") == [(3,)]
    assert gw.maybe_reload() is False  # nothing changed
    provision(world)
    assert gw.maybe_reload() is True
    assert stored(gw) == [0, 1, 2]
    assert rows(gw, "SELECT COUNT(*) FROM waiting_for_registry") == [(0,)]
    drain_all(gw, [acks.inbound(topics.reading(NEW), signed(NEW, 3))])  # and from then on as any device
    assert stored(gw) == [0, 1, 2, 3]


def test_a_reload_asked_for_by_sighup_needs_no_visible_change_of_the_file(tmp_path):
    """SIGHUP reloads even when the file kept its inode, size and time (an editor writing in place)."""
    world = World(tmp_path / "w", devices=1)
    path = world.folder / "registry.json"
    placeholder = "esp32-9992"
    provision(world, placeholder, key_of=NEW)  # the key of NEW under another id of the same length
    text = path.read_text()
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    drain_all(gw, [acks.inbound(topics.reading(NEW), signed(NEW, 0))])
    assert rows(gw, "SELECT COUNT(*) FROM waiting_for_registry") == [(1,)]
    before = os.stat(path)
    with open(path, "r+") as f:  # in place, same size, same time: no watch notices it
        f.write(text.replace(placeholder, NEW))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert gw.maybe_reload() is False
    assert gw.maybe_reload(force=True) is True
    assert stored(gw) == [0]


def test_a_revocation_takes_effect_at_the_reload(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    drain_all(gw, [acks.inbound(topics.reading(KNOWN), signed(KNOWN, 1))])
    registry = Registry.load(world.folder / "registry.json")
    registry.revoke(KNOWN)
    registry.save()
    assert gw.maybe_reload() is True
    drain_all(gw, [acks.inbound(topics.reading(KNOWN), signed(KNOWN, 2, time.time() + 5))])
    assert stored(gw, KNOWN) == [1]
    assert rows(gw, "SELECT code FROM quarantine") == [("revoked_key",)]


def test_a_registry_file_replaced_with_garbage_keeps_the_one_before_in_force_and_says_so_once(tmp_path, caplog):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    path = world.folder / "registry.json"
    good = path.read_bytes()
    tmp = path.with_name("registry.json.new")
    tmp.write_bytes(b"\x00{not json" * 10)
    os.replace(tmp, path)
    with caplog.at_level(logging.ERROR, logger="govedge.gateway"):
        assert gw.maybe_reload() is False
        assert gw.maybe_reload() is False  # the same broken file: said once
    lines = [r.getMessage() for r in caplog.records if "not reloaded" in r.getMessage()]
    assert len(lines) == 1 and str(path) in lines[0] and "\n" not in lines[0], lines
    drain_all(gw, [acks.inbound(topics.reading(KNOWN), signed(KNOWN, 1))])
    assert stored(gw, KNOWN) == [1]  # the registry before is in force
    path.write_bytes(good)
    provision(world)  # fixed: the next change loads
    assert gw.maybe_reload() is True


def test_a_flood_for_unknown_devices_stays_within_its_bound(tmp_path, monkeypatch):
    """An attacker with one device's broker login (its own topic only) or a serial port fills no disk."""
    monkeypatch.setattr(gwservice, "WAITING_PER_SENDER", 5)
    monkeypatch.setattr(gwservice, "WAITING_TOTAL", 8)
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world)
    acks = Acks()
    flood = [acks.inbound(topics.reading(NEW), signed(NEW, seq)) for seq in range(20)]
    others = [acks.inbound(topics.reading(f"esp32-{n:04d}"), signed(f"esp32-{n:04d}", 0)) for n in range(3, 9)]
    drain_all(gw, flood + others)
    assert len(acks.acked) == 26
    waiting = dict(rows(gw, "SELECT sender, COUNT(*) FROM waiting_for_registry GROUP BY sender"))
    assert waiting[NEW] == 5 and sum(waiting.values()) == 8
    assert rows(gw, "SELECT COUNT(*) FROM quarantine WHERE code = 'unknown_device'") == [(18,)]
    assert gw.counters["waiting_for_registry_full"] == 18
    provision(world)
    gw.maybe_reload()
    assert stored(gw) == [0, 1, 2, 3, 4]  # the first ones it sent, in order


def test_sighup_and_a_provisioned_file_reach_a_running_gateway_process(tmp_path):
    """The real service with a real Mosquitto: readings sent before the registry knew their device are
    stored after SIGHUP (a change no watch notices) and after a plain `provision` (the file watch)."""
    world = World(tmp_path / "w", devices=1)
    path = world.folder / "registry.json"
    placeholder = "esp32-9992"
    provision(world, placeholder, key_of=NEW)
    text = path.read_text()
    third = "esp32-0003"
    with Mosquitto(tmp_path / "local", persistence=True) as local:
        gw = GatewayProcess(tmp_path / "gw", path, local.port, 1, hub='[hub]\nhost = "127.0.0.1"\nport = 1\n',
                            extra="[verify]\nworkers = 1\n").start()
        try:
            gw.wait_for_log("ingest: subscribed")
            publish(local.port, [(topics.reading(NEW), signed(NEW, s)) for s in range(3)]
                    + [(topics.reading(third), signed(third, 0))])
            db = tmp_path / "gw" / "data" / "gateway.db"

            def count(sql: str) -> int:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    return c.execute(sql).fetchone()[0]

            wait_until(lambda: count("SELECT COUNT(*) FROM waiting_for_registry") == 4, 20, "messages waiting")
            before = os.stat(path)
            with open(path, "r+") as f:
                f.write(text.replace(placeholder, NEW))
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            time.sleep(3)  # longer than the watch's look: it saw nothing
            assert count("SELECT COUNT(*) FROM readings") == 0
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_until(lambda: count(f"SELECT COUNT(*) FROM readings WHERE device_id = '{NEW}'") == 3, 20,
                       "stored after SIGHUP", lambda: gw.log[-2000:])
            provision(world, third)
            wait_until(lambda: count(f"SELECT COUNT(*) FROM readings WHERE device_id = '{third}'") == 1, 20,
                       "stored after the file changed", lambda: gw.log[-2000:])
            assert count("SELECT COUNT(*) FROM quarantine") == 0
            assert gw.proc.poll() is None
        finally:
            gw.stop()
    assert "registry" in gw.log and "reloaded" in gw.log
