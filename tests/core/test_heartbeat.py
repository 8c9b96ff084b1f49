"""The gateway's status record (govedge.core.heartbeat): what the hub refuses before it looks at the record's
state, each with a code and a reason naming the fault (docs/FORMAT.md, "The gateway's status record")."""

from __future__ import annotations

import cbor2
import pytest

from govedge.core import cose, heartbeat
from govedge.core.wire import WireError
from support import private_key, scalar

KEY = private_key(scalar("gw-heartbeat"))
STORE = "0123456789abcdef"


def _keys(gateway_id: str):
    return [KEY.public_key()] if gateway_id == "gw-1" else []


def _record(**changes) -> heartbeat.Heartbeat:
    fields = dict(gateway_id="gw-1", store_id=STORE, seq=1 << 32 | 1, time=1764300000, heartbeat_s=60,
                  version="0.1.0", unbatched=0, unconfirmed=0, oldest_unconfirmed=None, unanchored=0,
                  oldest_unanchored=None, anchor_error=None, free_bytes=10**9, refusing=False,
                  clock_synchronized=True, devices=(heartbeat.DeviceSeen("esp32-0001", 1764299990, 5, 1764299989),),
                  devices_total=1)
    fields.update(changes)
    return heartbeat.Heartbeat(**fields)


def _body(**changes) -> bytes:
    """A record's body changed after the gateway built it, signed all the same (a gateway with a bug)."""
    body = cbor2.loads(cbor2.loads(heartbeat.sign(KEY, _record())).value[2])
    body.update(changes)
    for k in [k for k, v in changes.items() if v is ...]:
        del body[k]
    return cose.sign1(KEY, "gw-1", cbor2.dumps(body, canonical=True))


def test_a_record_reads_back_as_the_gateway_built_it_and_lists_the_most_recently_seen_devices_first():
    many = tuple(heartbeat.DeviceSeen(f"esp32-{i:04d}", 1764290000 + i, i, None) for i in range(heartbeat.MAX_DEVICES
                                                                                                 + 20))
    h = heartbeat.verify(heartbeat.sign(KEY, _record(devices=many, devices_total=len(many))), _keys)
    assert h.devices_total == len(many) and len(h.devices) == heartbeat.MAX_DEVICES
    assert {d.device_id for d in h.devices} == {d.device_id for d in many[20:]}  # the 20 seen longest ago left out
    assert len(h.cose) < heartbeat.MAX_HEARTBEAT_BYTES


@pytest.mark.parametrize("signed, code, words", [
    (lambda: heartbeat.sign(private_key(scalar("someone-else")), _record()), "bad_signature",
     "status record signature does not verify with the key of gateway 'gw-1'"),
    (lambda: heartbeat.sign(KEY, _record(gateway_id="gw-2")), "unknown_gateway", "gateway 'gw-2' is unknown"),
    (lambda: _body(gateway="gw-2"), "malformed_heartbeat", "names gateway 'gw-2' but is signed by 'gw-1'"),
    (lambda: _body(v=2), "malformed_heartbeat", "version is 2, not 1"),
    (lambda: _body(seq=-1), "malformed_heartbeat", "seq is not an unsigned 64-bit integer"),
    (lambda: _body(refusing=1), "malformed_heartbeat", "refusing or clock_synchronized is not a boolean"),
    (lambda: _body(devices={"esp32-0001": [1, 2]}), "malformed_heartbeat", "devices entry of 'esp32-0001'"),
    (lambda: _body(devices={"bad id": [1, 2, None]}), "malformed_heartbeat", "which is not a device id"),
    (lambda: _body(devices_total=0), "malformed_heartbeat", "devices_total is less than the nodes listed"),
    (lambda: _body(extra=1), "malformed_heartbeat", "has unexpected keys 'extra'"),
    (lambda: _body(store=...), "malformed_heartbeat", "has no 'store'"),
    (lambda: _body(anchor_error="x" * 301), "malformed_heartbeat", "anchor_error is neither null nor a text"),
    (lambda: _body(version="v" * 10**5), "too_large", "exceeds 65536"),
])
def test_the_hub_refuses_a_record_that_is_forged_or_of_the_wrong_shape_naming_the_fault(signed, code, words):
    with pytest.raises(WireError) as refused:
        heartbeat.verify(signed(), _keys)
    assert refused.value.code == code and words in refused.value.reason, refused.value.reason
