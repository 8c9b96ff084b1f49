"""The gateway's verification workers: what happens when they will not start."""

from __future__ import annotations

import logging

from govedge.core import verifypool as verify
from support.hubkit import World


def test_workers_that_will_not_start_leave_the_checking_to_the_gateway_until_they_do(tmp_path, caplog):
    world = World(tmp_path / "w", devices=1)
    registry = world.folder / "registry.json"
    good = registry.read_bytes()
    message = world.message("esp32-0001")
    v = verify.Verifier(registry, workers=0)
    v.workers = 1
    registry.write_text("not a registry")  # a worker cannot load it: every start fails
    with caplog.at_level(logging.ERROR, logger="govedge.gateway"):
        v._start()
    assert v.pool is None
    assert sum("died while starting" in r.message for r in caplog.records) == verify.START_ATTEMPTS
    assert "tries again in 60 s" in caplog.text
    # meanwhile every message is checked in the gateway itself, none is lost
    [reading] = v.result([message], v.submit([message]))
    assert reading.device_id == "esp32-0001"
    registry.write_bytes(good)
    v.retry_at = 0.0  # the retry is due: the workers start and take the work again
    future = v.submit([message])
    assert v.pool is not None
    assert v.result([message], future)[0].seq == reading.seq
    v.close()
