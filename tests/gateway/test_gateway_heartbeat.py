"""The gateway's status record (govedge.gateway.heartbeat), built from its real store: the backlog as the store
holds it (what `govedge gateway status` reads too), each node's last reading, numbers that grow across restarts
of the service so the hub can refuse a replay, and a record a gateway with thousands of nodes can still send."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import heartbeat
from govedge.gateway import config as gwconfig
from govedge.gateway.clocksync import GatewayClock
from govedge.gateway.health import snapshot
from govedge.gateway.heartbeat import Heartbeats, software_version
from govedge.gateway.store import Store

KEY = ec.generate_private_key(ec.SECP256R1())


def _config(tmp_path, extra: str = ""):
    (tmp_path / "gateway.key").write_bytes(KEY.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (tmp_path / "gateway.toml").write_text(
        '[gateway]\nid = "gw-beat"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "registry.json"\n'
        '[hub]\nhost = "127.0.0.1"\n' + extra)
    cfg = gwconfig.load(tmp_path / "gateway.toml")
    cfg.data_dir.mkdir()
    return cfg


def _verified(signed: bytes) -> heartbeat.Heartbeat:
    return heartbeat.verify(signed, lambda g: [KEY.public_key()] if g == "gw-beat" else [])


def test_the_record_tells_the_backlog_and_each_nodes_last_reading_as_the_store_holds_them(tmp_path):
    cfg = _config(tmp_path)
    store = Store(cfg.data_dir / "gateway.db")
    now = time.time()
    with store:
        for seq in range(6):
            store.add_reading("esp32-0001", seq, "reading", 1764300000 + 10 * seq, b"a%d" % seq)
        store.add_reading("esp32-0002", 41, "reading", None, b"b41")  # a node whose clock was not set
        store.add_batch(0, store.unbatched(2), b"r" * 32, b"c0", b"h0")
        store.add_batch(1, store.unbatched(2), b"r" * 32, b"c1", b"h1")
        store.advance("hub", 0)  # batch 0 confirmed by the hub, batch 1 not
        store.add_epoch(0, 0, 1, b"e" * 32, [b"h0", b"h1"])
        store.anchor_failed(0, "rpc https://user:s3cret@rpc.example/v3/t0ken timed out")
    refusing = [False]
    beats = Heartbeats(cfg, KEY, store, GatewayClock("yes"), lambda: refusing[0])
    h = _verified(beats.record(store))
    s = snapshot(cfg.data_dir / "gateway.db")
    assert (h.gateway_id, h.store_id, h.heartbeat_s, h.version) == ("gw-beat", store.store_id, 60, software_version())
    assert (h.unbatched, h.unconfirmed, h.unanchored) == (s["unbatched"], s["batches_unsent"],
                                                           s["epochs_unanchored"]) == (3, 1, 1)
    assert abs(h.oldest_unconfirmed - now) < 60 and abs(h.oldest_unanchored - now) < 60
    assert "s3cret" not in h.anchor_error and "rpc.example" in h.anchor_error  # secrets masked before signing
    assert (h.refusing, h.clock_synchronized, h.devices_total) == (False, True, 2)
    seen = {d.device_id: d for d in h.devices}
    assert (seen["esp32-0001"].last_seq, seen["esp32-0001"].node_time) == (5, 1764300050)
    assert (seen["esp32-0002"].last_seq, seen["esp32-0002"].node_time) == (41, None)
    assert all(abs(d.last_seen - now) < 60 for d in h.devices)
    refusing[0] = True
    assert _verified(beats.record(store)).refusing


def test_record_numbers_grow_across_restarts_of_the_service_so_an_old_one_is_a_replay(tmp_path):
    cfg = _config(tmp_path, "heartbeat_s = 5\n")
    store = Store(cfg.data_dir / "gateway.db")
    first_run = Heartbeats(cfg, KEY, store, GatewayClock("yes"))
    numbers = [_verified(first_run.record(store)).seq for _ in range(3)]
    store.close()
    store = Store(cfg.data_dir / "gateway.db")  # the service started again on the same store
    second_run = Heartbeats(cfg, KEY, store, GatewayClock("yes"))
    numbers.append(_verified(second_run.record(store)).seq)
    assert numbers == sorted(set(numbers)) and numbers[3] > numbers[2]
    assert _verified(second_run.record(store)).heartbeat_s == 5


def test_a_gateway_with_more_nodes_than_a_record_lists_sends_the_most_recently_seen_under_the_hubs_limit(tmp_path):
    cfg = _config(tmp_path)
    store = Store(cfg.data_dir / "gateway.db")
    with store:
        for i in range(heartbeat.MAX_DEVICES + 100):
            device = f"esp32-{'x' * 50}-{i:05d}"  # long ids: the largest record
            store.add_reading(device, 2**40 + i, "reading", 1764300000 + i, b"m%d" % i)
        store.db.execute("UPDATE readings SET received_at = ? + id", (time.time() - 10_000,))
    signed = Heartbeats(cfg, KEY, store, GatewayClock("yes")).record(store)
    assert len(signed) < heartbeat.MAX_HEARTBEAT_BYTES
    h = _verified(signed)
    assert h.devices_total == heartbeat.MAX_DEVICES + 100 and len(h.devices) == heartbeat.MAX_DEVICES
    assert min(int(d.device_id[-5:]) for d in h.devices) == 100  # the 100 seen longest ago left out


def test_a_negative_heartbeat_interval_is_named(tmp_path):
    with pytest.raises(gwconfig.ConfigError, match=r"\[hub\] heartbeat_s = -1: expected a number of at least 0$"):
        _config(tmp_path, "heartbeat_s = -1\n")
