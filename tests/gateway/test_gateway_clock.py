"""A wrong clock, the gateway's or a node's, never costs a correctly signed reading.

A Raspberry Pi has no hardware clock: after a power cut it runs in the past until NTP has synchronized
it, and correct readings look as if they came from the future. The gateway decides by whether its own
clock is known to be synchronized (govedge.gateway.clocksync): not known, a reading ahead is stored,
batched and flagged ``clock_unsynced``; synchronized, the node's clock is wrong and the reading is
quarantined whole (``future_time``). A reading timed before the product existed is ``time_before_floor``;
a node whose clock was never set sends no time and passes as before.
"""

from __future__ import annotations

import time

from govedge.core import topics
from support import firmware, scalar
from support.hubkit import World

from test_gateway_isolation import Acks, drain_all, make_gateway, rows

DAY = 86_400
DEVICE = "esp32-0001"


def signed(seq: int, t: float | None) -> bytes:
    return firmware("reading").signed_reading(scalar(DEVICE), DEVICE, seq, None if t is None else int(t),
                                              [("temp", "Cel", 2150)])


def test_a_reading_a_day_ahead_of_an_unsynchronized_gateway_clock_is_stored_not_quarantined(tmp_path):
    world = World(tmp_path / "w", devices=1)
    gw = make_gateway(tmp_path / "gw", world, verify='clock_synchronized = "no"\n')
    acks = Acks()
    drain_all(gw, [acks.inbound(topics.reading(DEVICE), signed(0, time.time() + DAY))])
    assert len(acks.acked) == 1
    assert rows(gw, "SELECT seq FROM readings") == [(0,)]
    assert rows(gw, "SELECT code FROM quarantine") == []
