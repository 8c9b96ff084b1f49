"""The hub's confirmation to a gateway (docs/FORMAT.md, "Acknowledgements between gateway and hub"): what the hub
writes, the gateway reads back exactly, and anything else is refused by name."""

import cbor2
import pytest

from govedge.core import confirm, topics
from govedge.core.wire import WireError

C = confirm.Confirmation


@pytest.mark.parametrize("c, body", [
    (C("batch", "0123456789abcdef", 7, "stored"),
     {"v": 1, "kind": "batch", "store": "0123456789abcdef", "seq": 7, "outcome": "stored"}),
    (C("epoch", "0123456789abcdef", 2, "duplicate"),
     {"v": 1, "kind": "epoch", "store": "0123456789abcdef", "epoch": 2, "outcome": "duplicate"}),
    (C("batch", None, 0, "rejected", "conflicting_batch"),
     {"v": 1, "kind": "batch", "seq": 0, "outcome": "rejected", "code": "conflicting_batch"}),
    (C("batch", None, 3, "waiting", "unknown_gateway"),
     {"v": 1, "kind": "batch", "seq": 3, "outcome": "waiting", "code": "unknown_gateway"}),
])
def test_a_confirmation_is_the_documented_map_and_reads_back(c, body):
    data = confirm.dumps(c)
    assert data == cbor2.dumps(body, canonical=True)
    assert confirm.loads(data) == c


@pytest.mark.parametrize("body, words", [
    ({"v": 2, "kind": "batch", "seq": 0, "outcome": "stored"}, "not a map of version 1"),
    ({"v": 1, "kind": "reading", "seq": 0, "outcome": "stored"}, "kind 'reading'"),
    ({"v": 1, "kind": "batch", "epoch": 0, "outcome": "stored"}, "seq is not"),
    ({"v": 1, "kind": "batch", "seq": -1, "outcome": "stored"}, "seq is not"),
    ({"v": 1, "kind": "batch", "seq": 0, "outcome": "lost"}, "outcome 'lost'"),
    ({"v": 1, "kind": "batch", "seq": 0, "outcome": "stored", "store": "XYZ"}, "store is not"),
    ({"v": 1, "kind": "batch", "seq": 0, "outcome": "rejected", "code": 5}, "code is not"),
])
def test_a_confirmation_that_is_not_the_format_is_refused_naming_what_is_wrong(body, words):
    with pytest.raises(WireError) as exc:
        confirm.loads(cbor2.dumps(body))
    assert exc.value.code == "malformed_confirmation" and words in exc.value.reason


def test_only_the_gateway_named_has_a_committed_topic_and_it_is_not_a_batch_topic():
    assert topics.committed("gw-1") == "govedge/v1/gateway/gw-1/committed"
    assert topics.gateway_of(topics.committed("gw-1")) is None  # the hub never takes it for a delivery
