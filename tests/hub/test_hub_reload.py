"""Registry and gateway-list changes reach a running hub, tried as an operator and as an attacker would:
batches of a gateway added with `hub add-gateway` while the hub runs, sent before, are stored after it (they
wait in ``waiting_for_gateway``); a revocation is in force at the reload and flags what was stored; a broken
file keeps the one before; a flood claiming unknown gateways stays within its bound."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from govedge.core import topics
from govedge.hub import config as hubconfig
from govedge.hub import service as hubservice
from govedge.hub.gateways import Gateways
from govedge.hub.service import Delivery, HubService
from support import firmware, private_key, revoke, scalar, wait_until
from support.hubkit import GATEWAY, HubProcess, World, broker, postgres, publish  # noqa: F401 - fixtures

from test_hub_keys import query

NEW_GW = "gw-new-01"
DEVICE = "esp32-0001"


def new_gateway_batch(world: World, seq: int) -> bytes:
    return world.batch(seq, [world.message(DEVICE)], key=private_key(scalar(NEW_GW)), gateway=NEW_GW)


def add_gateway(world: World) -> None:
    gateways = Gateways.load(world.folder / "gateways.json")
    gateways.add(NEW_GW, private_key(scalar(NEW_GW)).public_key())
    gateways.save()


def make_hub(world: World) -> HubService:
    return HubService(hubconfig.load(world.hub_toml(1883, workers=0)))


def feed(hub: HubService, items: list[tuple[str, bytes]]) -> list[int]:
    acks: list[int] = []
    for i, (topic, payload) in enumerate(items):
        hub.inbox.put(Delivery(topic, payload, lambda i=i: acks.append(i)))
    while len(acks) < len(items):
        hub.step(0)
    return acks


def close(hub: HubService) -> None:
    hub.verifier.close()
    hub.store.close()
    hub.guard.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_batches_of_a_gateway_added_while_the_hub_runs_are_stored_after_add_gateway(tmp_path, store, request):
    world = World(tmp_path / "w", devices=1,
                  store_url=request.getfixturevalue("postgres").new_database() if store == "postgresql" else None)
    hub = make_hub(world)
    try:
        early = [new_gateway_batch(world, seq) for seq in range(2)]
        acks = feed(hub, [(topics.batch(NEW_GW), b) for b in early + early[:1]])  # the first one twice
        assert len(acks) == 3
        assert query(world, "SELECT COUNT(*) FROM batches") == [(0,)]
        assert query(world, "SELECT COUNT(*) FROM rejected") == [(0,)]
        assert query(world, "SELECT COUNT(*) FROM waiting_for_gateway") == [(2,)]
        assert hub.maybe_reload() is False
        add_gateway(world)
        assert hub.maybe_reload() is True
        assert query(world, "SELECT gateway_id, seq FROM batches ORDER BY seq") == [(NEW_GW, 0), (NEW_GW, 1)]
        assert query(world, "SELECT COUNT(*) FROM readings") == [(2,)]
        assert query(world, "SELECT COUNT(*) FROM waiting_for_gateway") == [(0,)]
    finally:
        close(hub)


def test_a_revocation_at_the_reload_refuses_what_comes_and_flags_what_was_stored(tmp_path):
    world = World(tmp_path / "w", devices=1)
    hub = make_hub(world)
    sign = firmware("reading").signed_reading
    since = time.time() - 600
    try:
        feed(hub, [(topics.batch(GATEWAY), world.batch(0, [
            sign(scalar(DEVICE), DEVICE, 1, int(since - 60), [("temp", "Cel", 2150)]),
            sign(scalar(DEVICE), DEVICE, 2, int(since + 60), [("temp", "Cel", 2150)])]))])
        revoke(world.folder / "registry.json", DEVICE, since)
        assert hub.maybe_reload() is True
        assert query(world, "SELECT seq, flag FROM readings ORDER BY seq") == [(1, None), (2, "revoked_key")]
        feed(hub, [(topics.batch(GATEWAY), world.batch(1, [
            sign(scalar(DEVICE), DEVICE, 3, int(since + 120), [("temp", "Cel", 2150)])]))])
        assert query(world, "SELECT code, seq FROM rejected") == [("revoked_key", 3)]
    finally:
        close(hub)


def test_a_gateways_file_replaced_with_garbage_keeps_the_list_before_and_says_so_once(tmp_path, caplog):
    world = World(tmp_path / "w", devices=1)
    hub = make_hub(world)
    path = world.folder / "gateways.json"
    try:
        tmp = path.with_name("gateways.json.new")
        tmp.write_text('{"gateways": [1, 2')
        os.replace(tmp, path)
        with caplog.at_level(logging.ERROR, logger="govedge.hub"):
            assert hub.maybe_reload() is False
            assert hub.maybe_reload() is False
        lines = [r.getMessage() for r in caplog.records if "not reloaded" in r.getMessage()]
        assert len(lines) == 1 and str(path) in lines[0] and "\n" not in lines[0], lines
        feed(hub, [(topics.batch(GATEWAY), world.batch(0, [world.message(DEVICE)]))])
        assert query(world, "SELECT COUNT(*) FROM batches") == [(1,)]  # the list before is in force
    finally:
        close(hub)


def test_a_flood_of_batches_claiming_unknown_gateways_stays_within_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(hubservice, "WAITING_PER_GATEWAY", (3, 1 << 20))
    monkeypatch.setattr(hubservice, "WAITING_TOTAL", (5, 1 << 20))
    world = World(tmp_path / "w", devices=1)
    hub = make_hub(world)
    try:
        flood = [(topics.batch(NEW_GW), new_gateway_batch(world, seq)) for seq in range(10)]
        stranger = private_key(scalar("stranger"))
        others = [(topics.batch(f"gw-x{n}"), world.batch(0, [world.message(DEVICE)], key=stranger,
                                                         gateway=f"gw-x{n}")) for n in range(4)]
        assert len(feed(hub, flood + others)) == 14
        assert dict(query(world, "SELECT gateway_id, COUNT(*) FROM waiting_for_gateway GROUP BY gateway_id"))[
            NEW_GW] == 3
        assert query(world, "SELECT COUNT(*) FROM waiting_for_gateway") == [(5,)]
        assert query(world, "SELECT COUNT(*) FROM rejected WHERE code = 'unknown_gateway'") == [(9,)]
        add_gateway(world)
        hub.maybe_reload()
        assert query(world, "SELECT seq FROM batches ORDER BY seq") == [(0,), (1,), (2,)]
    finally:
        close(hub)


def test_add_gateway_reaches_a_running_hub_process_and_sighup_reloads_it(tmp_path, broker):
    """The real hub with a real Mosquitto: batches sent before `govedge hub add-gateway` are stored after it,
    without a restart; SIGHUP reloads at once."""
    world = World(tmp_path / "w", devices=1)
    config = world.hub_toml(broker.port)
    hub = HubProcess(config).start()
    try:
        hub.wait_subscribed()
        publish(broker.port, [(topics.batch(NEW_GW), new_gateway_batch(world, seq)) for seq in range(3)])
        count = lambda table: query(world, f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: E731
        wait_until(lambda: count("waiting_for_gateway") == 3, 20, "batches waiting", lambda: hub.log[-2000:])
        pem = tmp_path / "new-gw.pem"
        from cryptography.hazmat.primitives import serialization

        pem.write_bytes(private_key(scalar(NEW_GW)).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        out = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "add-gateway", "--config", str(config),
                              NEW_GW, str(pem)], capture_output=True, text=True, check=True).stdout
        assert "within seconds" in out
        wait_until(lambda: count("batches") == 3, 20, "batches stored after add-gateway", lambda: hub.log[-2000:])
        assert count("waiting_for_gateway") == 0 and count("rejected") == 0
        reloads = hub.log.count("registry " + str(world.folder / "registry.json") + " reloaded")
        os.kill(hub.proc.pid, signal.SIGHUP)  # the registry did not change: only SIGHUP reloads it
        wait_until(lambda: hub.log.count("registry " + str(world.folder / "registry.json") + " reloaded") > reloads,
                   10, "a reload on SIGHUP", lambda: hub.log[-2000:])
        assert hub.proc.poll() is None
    finally:
        hub.stop()
