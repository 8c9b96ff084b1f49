"""The gateway forgets a batch only when the hub confirms it committed it, not on the hub broker's PUBACK
(docs/FORMAT.md, "Acknowledgements between gateway and hub"): a node (MicroPython firmware), the gateway, the
hub's Mosquitto without persistence and `govedge hub run`, each its own process."""

from __future__ import annotations

import sqlite3

import pytest

from govedge.hub.store import HubStore
from govedge.tools.dev.broker import Mosquitto
from support import wait_until
from support.deploy import GATEWAY_ID, GatewayProcess
from support.hubkit import hub_beside
from support.nodes import VirtualNode

pytestmark = pytest.mark.e2e  # the product's processes, end to end

DEVICE = "esp32-0931"


def _gateway_db(gw: GatewayProcess, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{gw.folder / 'data' / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _hub_db(url: str, sql: str) -> list[tuple]:
    s = HubStore(url)
    try:
        return [tuple(r) for r in s._exec(sql).fetchall()]
    finally:
        s.close()


def test_a_batch_the_hub_broker_acknowledged_and_lost_is_sent_again_and_stored_once(tmp_path, build_dir):
    local = Mosquitto(tmp_path / "local", persistence=True).start()
    hub_broker = Mosquitto(tmp_path / "hub-broker", persistence=False).start()
    registry = tmp_path / "registry.json"
    node = VirtualNode(tmp_path / DEVICE, build_dir, registry, DEVICE, local.port, interval_s=0.1)
    gw = GatewayProcess(tmp_path / "gateway", registry, local.port, hub_broker.port, batch_interval_s=0.3,
                        batch_max_readings=5, hub=f'[hub]\nhost = "127.0.0.1"\nport = {hub_broker.port}\n'
                                                  'rate_per_s = 0\nconfirm_timeout_s = 1\n')
    hub_folder = tmp_path / "hubside"
    hub_folder.mkdir()
    hub = None
    try:
        gw.start()
        gw.wait_for_log("ingest: subscribed")
        node.start()
        # no hub is subscribed: the broker acknowledges each batch (PUBACK) and forgets it at once
        gw.wait_for_log("not confirmed by the hub within 1 s; sending it again", timeout=30)
        assert _gateway_db(gw, "SELECT batch_seq FROM cursors WHERE destination = 'hub'") == []
        hub = hub_beside(hub_folder, registry, GATEWAY_ID, gw.public_key, hub_broker.port,
                         client_id="hub-confirm").start()
        hub.wait_subscribed()
        url = "sqlite://" + str(hub_folder / "hub.db")
        wait_until(lambda: _hub_db(url, "SELECT count(*) FROM batches")[0][0] >= 3, timeout=60,
                   what="batches at the hub", detail=lambda: hub.log[-1500:])
        node.kill()

        def all_confirmed() -> bool:
            made = _gateway_db(gw, "SELECT max(seq) FROM batches")[0][0]
            cursor = _gateway_db(gw, "SELECT batch_seq FROM cursors WHERE destination = 'hub'")
            unbatched = _gateway_db(gw, "SELECT count(*) FROM readings WHERE batch_seq IS NULL")[0][0]
            return not unbatched and cursor == [(made,)]

        wait_until(all_confirmed, timeout=60, what="every batch confirmed by the hub",
                   detail=lambda: gw.log[-1500:])
    finally:
        node.kill()
        if hub is not None:
            hub.stop()
        gw.stop()
        local.stop()
        hub_broker.stop()
    (store_id,) = {s for (s,) in _hub_db(url, "SELECT DISTINCT store_id FROM batches")}
    made = [s for (s,) in _gateway_db(gw, "SELECT seq FROM batches ORDER BY seq")]
    assert made[0] == 0  # batch 0 went out before any hub listened
    assert [s for (s,) in _hub_db(url, "SELECT seq FROM batches ORDER BY seq")] == made
    assert sorted(_hub_db(url, "SELECT device_id, seq FROM readings")) == \
        sorted(_gateway_db(gw, "SELECT device_id, seq FROM readings"))
    assert _hub_db(url, "SELECT count(*) FROM rejected") == [(0,)]
    # stored exactly once; a delivery again (sent again before the confirmation came) was confirmed as a duplicate
    assert hub.log.count(f"batch {GATEWAY_ID}/{store_id}/0: ") == 1, hub.log[-3000:]
    assert len(store_id) == 16 and gw.log.count("sending it again") >= 1


def test_the_gateway_keeps_a_window_of_batches_in_flight_and_moves_it_only_on_the_hubs_confirmation(tmp_path,
                                                                                                 build_dir):
    from govedge.gateway.uplink import WINDOW
    from support.deploy import HubSubscriber

    local = Mosquitto(tmp_path / "local", persistence=True).start()
    hub_broker = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
    registry = tmp_path / "registry.json"
    node = VirtualNode(tmp_path / DEVICE, build_dir, registry, DEVICE, local.port, interval_s=0.05)
    gw = GatewayProcess(tmp_path / "gateway", registry, local.port, hub_broker.port, batch_interval_s=0.05,
                        batch_max_readings=1, hub=f'[hub]\nhost = "127.0.0.1"\nport = {hub_broker.port}\n'
                                                  'rate_per_s = 0\nconfirm_timeout_s = 3\n')
    sub = None
    try:
        gw.start()
        sub = HubSubscriber(hub_broker.port, registry, gw.public_key, confirms=False)  # a hub that is silent
        assert sub.subscribed.wait(10)
        gw.wait_for_log("ingest: subscribed")
        node.start()
        wait_until(lambda: (_gateway_db(gw, "SELECT max(seq) FROM batches")[0][0] or 0) >= WINDOW + 8, timeout=60,
                   what="more batches than the window")
        wait_until(lambda: len(sub.batches) >= WINDOW, what="a window of batches at the hub")
        # several in flight, not one per round trip; and no more than the window while nothing is confirmed
        assert sorted(b.seq for b in sub.batches.values()) == list(range(WINDOW))
        assert _gateway_db(gw, "SELECT batch_seq FROM cursors WHERE destination = 'hub'") == []
        sub.confirms = True  # from now on the hub confirms: what it got unconfirmed comes again, then the rest
        node.kill()

        def all_confirmed() -> bool:
            made = _gateway_db(gw, "SELECT max(seq) FROM batches")[0][0]
            unbatched = _gateway_db(gw, "SELECT count(*) FROM readings WHERE batch_seq IS NULL")[0][0]
            return not unbatched and _gateway_db(gw, "SELECT batch_seq FROM cursors WHERE destination = 'hub'") \
                == [(made,)]

        wait_until(all_confirmed, timeout=60, what="every batch confirmed", detail=lambda: gw.log[-1500:])
        made = [s for (s,) in _gateway_db(gw, "SELECT seq FROM batches ORDER BY seq")]
        assert sorted(b.seq for b in sub.batches.values()) == made
        assert "not confirmed by the hub within 3 s; sending it again" in gw.log
    finally:
        node.kill()
        if sub is not None:
            sub.close()
        gw.stop()
        local.stop()
        hub_broker.stop()
