"""The whole ingest path under attack: no message and no batch can stop a service (issue 10).

Hostile inputs (tests/support/fuzzgen.py: valid messages mutated at the CBOR level, signed
with a valid key where the attack needs it, and raw bytes) go to a real gateway's
per-message handling (``Gateway.drain``, SQLite store, filter, aggregator, batches)
and to a real hub's per-batch handling (``HubService.step``, SQLite store), with
good traffic around them. What the gateway accepted and signed goes on to a hub.

Every example holds the promises an operator under attack relies on:

- nothing escapes: no exception out of drain or step;
- every input is acknowledged exactly once, after its commit;
- every input is stored, or refused with a typed code (quarantine, rejected) and a
  one-line reason of bounded length; a refusal for ``internal_error`` (a caught
  exception) fails the campaign as a crash would: it is a bug the safety net hid;
- the counts add up: accepted + quarantined + duplicates = inputs;
- the stores stay consistent: every stored reading decodes and verifies again, the
  gateway's batches verify and cover its readings, the hub's readings are leaves
  of their batch, the hub's values read back exactly as signed;
- good readings before, beside and after each hostile one are accepted, and what
  the gateway accepted the hub stores.

`make test` runs a few hundred examples; GOVEDGE_SOAK=1 runs thousands
(GOVEDGE_SOAK_SEED=n draws other examples than the fixed ones). Inputs that
ever broke something are kept in tests/gateway/fuzz_regressions/ and replayed by
test_kept_inputs_that_once_broke_something_are_handled.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import math
import os
import re
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import cbor2
import hypothesis
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from support import fuzzgen as fg
from govedge.core import batch, merkle, topics, wire
from govedge.gateway import service as gateway_service
from govedge.gateway.config import GatewayConfig, MqttEndpoint
from govedge.hub import service as hub_service
from govedge.hub.config import HubConfig
from govedge.hub.gateways import Gateways
from govedge.core.registry import Registry
from support.hubkit import GATEWAY, World
from support import cose_sign1, private_key, scalar

SOAK = os.environ.get("GOVEDGE_SOAK") == "1"
SOAK_SEED = os.environ.get("GOVEDGE_SOAK_SEED")
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"

CODE = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")
# a refusal's reason is one line an operator reads in a table, whatever the input held
MAX_REASON_CHARS = 600

HOSTILE, WITNESS, OTHER = "esp32-0001", "esp32-0002", "esp32-0003"


def campaign(short: int, soak: int):
    """The soak marker and the number of examples: short in `make test`, long with GOVEDGE_SOAK=1."""

    def wrap(test):
        # no explain phase: it re-runs a failing example hundreds of times, minutes for a pipeline
        test = settings(max_examples=soak if SOAK else short, derandomize=SOAK_SEED is None,
                        phases=[Phase.explicit, Phase.generate, Phase.shrink])(test)
        if SOAK_SEED is not None:
            test = hypothesis.seed(int(SOAK_SEED))(test)
        return pytest.mark.soak(test)

    return wrap


# -- the rig: keys and registry on disk, a fresh gateway and hub for every example ----------


class Rig:
    def __init__(self, folder: Path):
        self.world = World(folder / "world", devices=3)
        self.registry_path = self.world.folder / "registry.json"
        self.registry = Registry.load(self.registry_path)
        self.gateways = Gateways.load(self.world.folder / "gateways.json")
        self.gateway_key_file = folder / "gateway.key"
        self.gateway_key_file.write_bytes(self.world.gateway_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.keys = {d: private_key(scalar(d)) for d in self.world.devices}
        self.scratch = folder / "runs"
        self.scratch.mkdir()
        self.runs = 0
        self.last: list[tuple[str, str, bytes]] = []  # the running example's hostile inputs: (feed, topic, bytes)
        self.hand_written = fg.hand_written(self.keys[HOSTILE], HOSTILE, 7)
        self.good = functools.lru_cache(maxsize=None)(self._good)  # signatures are random: signed once

    def _good(self, device: str, seq: int) -> bytes:
        """A reading as the firmware builds it (BME280 and SDS011 values in fixed point)."""
        ms = [("temp", "Cel", (2150 + seq % 50, -2)), ("hum", "%RH", (4820, -2)), ("press", "Pa", (100812, 0)),
              ("pm2_5", "ug/m3", (123, -1)), ("pm10", "ug/m3", (201, -1))]
        return fg.sign_payload(self.keys[device], device, fg.encode(fg.pack_tree(seq, fg.T0 + seq, ms)))

    def _folder(self) -> Path:
        self.runs += 1
        if self.runs % 50 == 0:
            gc.collect()  # each service holds MQTT clients (with socket pairs) in reference cycles
        return Path(tempfile.mkdtemp(dir=self.scratch))

    @contextlib.contextmanager
    def gateway(self):
        data = self._folder()
        cfg = GatewayConfig(gateway_id=GATEWAY, key_file=self.gateway_key_file, data_dir=data,
                            registry=self.registry_path, ingest=MqttEndpoint(client_id="fuzz-ingest"),
                            hub=MqttEndpoint(client_id="fuzz-uplink"), verify_workers=0)
        g = gateway_service.Gateway(cfg)
        try:
            yield g
        finally:  # what `gateway run` closes as it stops
            g.verifier.close()
            g.store.close()
            g.guard.close()
            shutil.rmtree(data, ignore_errors=True)

    @contextlib.contextmanager
    def hub(self):
        folder = self._folder()
        cfg = HubConfig(registry=self.registry_path, gateways=self.world.folder / "gateways.json",
                        store="sqlite://" + str(folder / "hub.db"), mqtt=MqttEndpoint(client_id="fuzz-hub"),
                        share_group="", verify_workers=0, state_dir=folder)
        h = hub_service.HubService(cfg)
        try:
            yield h
        finally:
            h.verifier.close()
            h.store.close()
            h.guard.close()
            shutil.rmtree(folder, ignore_errors=True)

    def batch(self, seq: int, messages: list[bytes], aggregates: list | None = None, mode: str = "raw") -> bytes:
        cose, _root = batch.sign(self.world.gateway_key, GATEWAY, seq, fg.T0 + 100 + seq, messages,
                                 aggregates or [], mode)
        return cose


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    return Rig(tmp_path_factory.mktemp("fuzz"))


# -- what every refusal and every store must satisfy ------------------------------------------


def event(text: str) -> None:
    """Counted in --hypothesis-show-statistics: which checks the inputs reached (a replay counts none)."""
    if currently_in_test_context():
        hypothesis.event(text)


def check_refusal(code, reason) -> None:
    assert isinstance(code, str) and CODE.match(code), f"refusal code {code!r} is not a typed code"
    assert code != "internal_error", f"an exception was caught while handling the input: {reason}"
    assert isinstance(reason, str) and reason.strip(), f"refusal {code} has no reason"
    assert len(reason) <= MAX_REASON_CHARS, f"refusal {code} has a reason of {len(reason)} characters: {reason[:200]}"
    assert "\n" not in reason, f"refusal {code} has a reason of several lines: {reason[:200]}"


def rows(db, table: str) -> list[dict]:
    cur = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def holds(row: dict, payload: bytes) -> bool:
    """The refusal row keeps the input: by its SHA-256 where the row has one, else whole or as a prefix."""
    digest = hashlib.sha256(payload).digest()
    digests = [bytes(v) if isinstance(v, (bytes, memoryview)) else v for k, v in row.items()
               if ("sha" in k or "digest" in k) and v is not None]
    if digests:
        return digest in digests or digest.hex() in digests
    kept = [bytes(v) for v in row.values() if isinstance(v, (bytes, memoryview))]
    return any(v == payload or (v and payload.startswith(v)) for v in kept)


def verified(payload: bytes, keys) -> wire.Reading | None:
    try:
        return wire.verify(payload, keys)
    except wire.WireError:
        return None


def _ack(counts: list, i: int) -> None:
    counts[i] += 1


def through(service, items: list[tuple[str, bytes]]) -> list[int]:
    """Inputs into a gateway's (drain) or a hub's (step) inbox, handled until none is left; how often
    each was acknowledged."""
    gateway = isinstance(service, gateway_service.Gateway)
    wrap = gateway_service.Inbound if gateway else hub_service.Delivery
    handle = service.drain if gateway else service.step
    acks = [0] * len(items)
    for i, (topic, payload) in enumerate(items):
        service.inbox.put(wrap(topic, payload, functools.partial(_ack, acks, i)))
    for _ in range(100):
        handle(0.0)
        if service.inbox.empty() and not service.in_flight:
            break
    return acks


def outcome_counts(g) -> int:
    return (g.counters["verified"] + g.counters["quarantined"] + g.counters["duplicates"]
            + g.counters["waiting_for_registry"])  # a device not known yet: verified again after a reload


def check_gateway_store(rig: Rig, g) -> None:
    """Every stored reading verifies again, as stored; every batch verifies and covers its readings."""
    readings = g.store.db.execute("SELECT device_id, seq, node_time, message, batch_seq FROM readings").fetchall()
    assert len(readings) == g.counters["verified"]
    for device, seq, node_time, message, _ in readings:
        r = wire.verify(message, rig.registry)
        assert (r.device_id, r.seq, r.time) == (device, seq, node_time)
    quarantined = rows(g.store.db, "quarantine")
    assert len(quarantined) <= g.counters["quarantined"]
    for row in quarantined:
        check_refusal(row["code"], row["reason"])
    in_batches = 0
    for seq, cose, _created in g.store.batches_after(-1, 10_000):
        b = batch.verify(cose, rig.gateways, rig.registry)
        mine = sorted(m for _, _, _, m, s in readings if s == seq)
        assert sorted(b.messages) == mine, f"batch {seq} does not carry exactly its readings"
        in_batches += b.size
    assert in_batches == len(readings), "a stored reading is in no batch"


def check_hub_store(rig: Rig, h) -> None:
    """The hub's readings are leaves of their batch, verify again and read back exactly as signed."""
    db = h.store.db
    batches = {(gw, seq): batch.verify(bytes(cose), rig.gateways)
               for gw, seq, cose in db.execute("SELECT gateway_id, seq, cose FROM batches")}
    for device, seq, t, gw, batch_seq, leaf, message in db.execute(
            "SELECT device_id, seq, time, gateway_id, batch_seq, leaf, message FROM readings").fetchall():
        message = bytes(message)
        b = batches[(gw, batch_seq)]
        assert 0 <= leaf < b.size and b.leaves[leaf] == merkle.leaf_hash(message), \
            f"reading {device}/{seq} is not leaf {leaf} of batch {gw}/{batch_seq}"
        r = wire.verify(message, rig.registry)
        assert (r.device_id, r.seq, r.time) == (device, seq, t)
        stored = db.execute("SELECT name, unit, value, value_text FROM measurements WHERE device_id = ? AND seq = ? "
                            "ORDER BY pos", (device, seq)).fetchall()
        assert [(n, u) for n, u, _, _ in stored] == [(m.name, m.unit) for m in r.measurements]
        for (name, _, number, text), m in zip(stored, r.measurements):
            assert reads_back(text, m.value), f"{device}/{seq} {name}: {text[:80]!r} is not {m.value!r}"
            if not isinstance(m.value, (bool, str)):
                assert number == float(m.value)
    for row in rows(db, "rejected"):
        check_refusal(row["code"], row["reason"])


def reads_back(text: str, value) -> bool:
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, str):
        return text == value
    if isinstance(value, float):
        return float(text) == value
    return len(text) <= 60 and Decimal(text) == Decimal(value)


# -- the gateway ---------------------------------------------------------------------------------


def gateway_keeps_its_word(rig: Rig, hostile: list[tuple[str, bytes]]) -> list[bytes]:
    """Hostile inputs between good readings, through a fresh gateway; returns its batches."""
    witness = topics.reading(WITNESS)
    items = [(witness, rig.good(WITNESS, 1)), *hostile, (witness, rig.good(WITNESS, 2))]
    with rig.gateway() as g:
        acks = through(g, items)
        assert acks == [1] * len(items), f"acknowledgements per input: {acks}"
        assert outcome_counts(g) == len(items), dict(g.counters)

        # in order, each input is quarantined (the next quarantine row keeps it), stored (the first
        # time its bytes are), or the same bytes as one stored (a duplicate, dropped and counted)
        pending, stored, duplicates = rows(g.store.db, "quarantine"), set(), 0
        waiting = {bytes(m) for (m,) in g.store.db.execute("SELECT message FROM waiting_for_registry")}
        for _, payload in items:
            r = verified(payload, rig.registry)
            if payload in waiting:
                event("gateway: waiting_for_registry")
            elif pending and holds(pending[0], payload):
                row = pending.pop(0)
                check_refusal(row["code"], row["reason"])
                event(f"gateway: {row['code']}")
            elif payload not in stored and r is not None and g.store.message_of(r.device_id, r.seq) == payload:
                stored.add(payload)
                event(f"gateway: stored {r.device_id}")
            else:
                assert payload in stored, "an input neither stored nor quarantined nor a duplicate"
                duplicates += 1
        assert not pending, f"quarantine rows of no input: {pending}"
        assert g.counters["duplicates"] == duplicates
        for seq in (1, 2):
            assert g.store.message_of(WITNESS, seq) == rig.good(WITNESS, seq)

        after = rig.good(WITNESS, 3)  # a good reading after the hostile ones
        assert through(g, [(witness, after)]) == [1]
        assert g.store.message_of(WITNESS, 3) == after

        # as at `stop`: the last windows closed, the last readings batched
        g.finish_in_flight()
        g.batcher.aggregates.extend(g.aggregator.flush())
        while g.batcher.maybe_batch(force=True) is not None:
            pass
        check_gateway_store(rig, g)
        return [b.cose for b in g.store.batches_after(-1, 10_000)]


def hub_stores_what_the_gateway_signed(rig: Rig, batches: list[bytes]) -> None:
    """The gateway's batches (hostile readings it accepted included) are stored whole at the hub."""
    with rig.hub() as h:
        assert through(h, [(topics.batch(GATEWAY), b) for b in batches]) == [1] * len(batches)
        assert rows(h.store.db, "rejected") == [], "the hub refused what the gateway accepted and signed"
        assert h.store.count("batches") == len(batches)
        expected = {(r.device_id, r.seq) for b in batches for r in
                    map(wire.decode_unverified, batch.verify(b, rig.gateways).messages)}
        assert h.store.reading_ids() == expected
        check_hub_store(rig, h)


# -- device messages: the strategies -----------------------------------------------------------


def _valid_pack(draw) -> fg.Item:
    seq = draw(st.sampled_from([0, 5, 10**6, 2**32]) | st.integers(0, 2**40))
    t = draw(st.sampled_from([fg.T0, None, fg.T0 + 1, 2**28, 2**32 - 1]))
    return fg.pack_tree(seq, t, draw(fg.measurements()))


@st.composite
def device_message(draw, rig: Rig) -> bytes:
    """One hostile device message: mutated contents signed by the device, a mutated header signed,
    a mutated envelope, mutated bytes, or one written by hand."""
    key = rig.keys[HOSTILE]
    kind = draw(st.sampled_from(["payload"] * 5 + ["header", "envelope", "bytes", "hand", "extreme"]))
    note(f"device message: {kind}")
    donors = (fg.pack_tree(9, fg.T0, [("pm10", "ug/m3", (201, -1))]), fg.parse(rig.good(OTHER, 4)))
    if kind == "payload":
        payload = draw(fg.mutated(_valid_pack(draw), donors))
        return fg.sign_payload(key, HOSTILE, payload)
    if kind == "header":
        header = fg.of({1: -7, 4: HOSTILE.encode()})
        payload = fg.encode(_valid_pack(draw))
        return fg.sign_payload(key, HOSTILE, payload, protected=draw(fg.mutated(header, donors, 2)))
    good = fg.sign_payload(key, HOSTILE, fg.encode(_valid_pack(draw)))
    if kind == "envelope":
        return draw(fg.mutated(fg.parse(good), donors, 2))
    if kind == "bytes":
        return fg.apply_edits(good, draw(fg.byte_edits))
    if kind == "hand":
        name, message = draw(st.sampled_from(rig.hand_written))
        note(f"hand-written: {name}")
        return message
    # within every bound, at every bound: what must be accepted and carried through
    first = {0: "temp", 1: "Cel", "seq": draw(st.sampled_from([0, 2**63 - 1]) | st.integers(0, 2**63 - 1)),
             2: draw(st.builds(lambda e, m: cbor2.CBORTag(4, [e, m]),
                               st.sampled_from([-18, 0, 18]) | st.integers(-18, 18),
                               st.sampled_from([-(2**53), 0, 2**53]) | st.integers(-(2**53), 2**53))
                     | st.floats(allow_nan=False, allow_infinity=False)
                     | st.integers(-(2**63), 2**63 - 1))}
    if draw(st.booleans()):
        first[-3] = draw(st.sampled_from([2**28, 2**32 - 1, float(2**28), 4294967295.5]) | st.integers(2**28, fg.T0))
    more = draw(st.lists(st.tuples(st.sampled_from(["x", "count", "hum", "pm10", "n" * 64]),
                                   st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1)),
                         max_size=4, unique_by=lambda t: t[0]))
    return fg.sign_payload(key, HOSTILE, cbor2.dumps([first] + [{0: n, 2: v} for n, v in more if n != "temp"]))


TOPICS = [topics.reading(HOSTILE)] * 6 + [topics.status(HOSTILE), topics.reading(WITNESS), "govedge/v1//reading",
                                          "x", "govedge/v1/" + "d" * 3000 + "/reading", "govedge/v1/\u00e9/status"]


def gateway_example(rig: Rig, data) -> list[tuple[str, bytes]]:
    hostile = data.draw(st.lists(st.tuples(st.sampled_from(TOPICS), device_message(rig)), min_size=1, max_size=3))
    rig.last = [("gateway", topic, payload) for topic, payload in hostile]
    hub_stores_what_the_gateway_signed(rig, gateway_keeps_its_word(rig, hostile))


@campaign(short=150, soak=4000)
@given(st.data())
def test_hostile_messages_are_stored_or_quarantined_one_by_one_and_good_ones_still_pass(rig, data):
    gateway_example(rig, data)


# -- the hub -----------------------------------------------------------------------------------


def hub_keeps_its_word(rig: Rig, hostile: list[tuple[str, bytes]]) -> None:
    """Hostile deliveries between good batches, through a fresh hub."""
    before = rig.batch(1000, [rig.good(WITNESS, 1), rig.good(WITNESS, 2)])
    beside = rig.batch(1002, [rig.good(WITNESS, 3)])
    after = rig.batch(1003, [rig.good(WITNESS, 4)])
    items = [(topics.batch(GATEWAY), before), *hostile, (topics.batch(GATEWAY), beside)]
    with rig.hub() as h:
        acks = through(h, items)
        assert acks == [1] * len(items), f"acknowledgements per delivery: {acks}"
        assert through(h, [(topics.batch(GATEWAY), after)]) == [1]
        stored = {bytes(c) for (c,) in h.store.db.execute("SELECT cose FROM batches")}
        # a batch of a gateway the hub does not know waits for `hub add-gateway` (hub/README.md)
        waiting = {bytes(p) for (p,) in h.store.db.execute("SELECT payload FROM waiting_for_gateway")}
        refusals = rows(h.store.db, "rejected")
        unused = list(refusals)
        seen = set()
        for _, payload in items:
            if payload in stored or payload in seen:
                event("hub: stored" if payload not in seen else "hub: duplicate")
                seen.add(payload)
                continue
            seen.add(payload)
            if payload in waiting:
                event("hub: waiting_for_gateway")
                continue
            row = next((r for r in unused if holds(r, payload)), None)
            assert row is not None, "a delivery neither stored nor rejected"
            unused.remove(row)
            event(f"hub: {row['code']}")
        # a batch whose own signature, root and shape are sound is stored, whatever its device
        # messages hold: a bad one is refused alone (unless an earlier batch had its id)
        first_of = {}
        for topic, payload in items:
            try:
                b = batch.verify(payload, rig.gateways)
            except wire.WireError:
                continue
            if first_of.setdefault(b.id, payload) == payload and topic == topics.batch(b.gateway_id):
                assert payload in stored, f"batch {b.id} was refused whole for what a device message in it holds"
        for b in (before, beside, after):
            assert b in stored, "a good batch was not stored"
        assert {(WITNESS, s) for s in (1, 2, 3, 4)} <= h.store.reading_ids()
        # in a stored batch, every device message that verifies is a stored reading
        for cose in stored:
            for m in batch.verify(cose, rig.gateways).messages:
                r = verified(m, rig.registry)
                if r is not None:
                    assert (r.device_id, r.seq) in h.store.reading_ids()
        check_hub_store(rig, h)


def resigned(rig: Rig, signed: bytes, edit) -> bytes:
    """A batch whose body (as a tree) is edited and signed again with the gateway's key."""
    env = wire.decode_envelope(signed, max_bytes=batch.MAX_BATCH_BYTES)
    body = edit(fg.parse(env.payload))
    return cose_sign1(rig.world.gateway_key, body if isinstance(body, bytes) else fg.encode(body),
                      protected=env.protected)


@st.composite
def hostile_batch(draw, rig: Rig) -> bytes:
    """One hostile delivery: a batch signed by the gateway carrying a hostile device message or
    hostile aggregates, a batch whose signed body is mutated, mutated bytes, or a batch of a stranger."""
    kind = draw(st.sampled_from(["message"] * 4 + ["body"] * 3 + ["bytes", "leaves", "stranger"]))
    note(f"batch: {kind}")
    aggregate = fg.aggregate_map(OTHER, 5)
    messages = [rig.good(OTHER, 5), draw(device_message(rig)), rig.good(OTHER, 6)]
    if kind == "message":
        signed = rig.batch(1001, messages, [aggregate])
        if draw(st.booleans()):  # and a hostile aggregate, under a valid gateway signature
            hostile = draw(fg.mutated(fg.of(aggregate)))
            signed = resigned(rig, signed, lambda body: fg.with_value(body, "aggregates", fg.raw(b"\x81" + hostile)))
        return signed
    if kind == "leaves":
        return rig.batch(1001, messages, [aggregate], mode="aggregate")
    good = rig.batch(1001, [rig.good(OTHER, 5), rig.good(OTHER, 6)], [aggregate])
    if kind == "body":
        return resigned(rig, good, lambda body: draw(fg.mutated(body, (fg.parse(rig.good(OTHER, 4)),), 2)))
    if kind == "bytes":
        return fg.apply_edits(good, draw(fg.byte_edits))
    stranger = private_key(scalar("a stranger"))
    return cose_sign1(stranger, wire.decode_envelope(good, max_bytes=batch.MAX_BATCH_BYTES).payload,
                      protected=draw(st.sampled_from([cbor2.dumps({1: -7, 4: GATEWAY.encode()}),
                                                      cbor2.dumps({1: -7, 4: b"gw-unknown"})])))


BATCH_TOPICS = [topics.batch(GATEWAY)] * 6 + [topics.epoch(GATEWAY), topics.batch("gw-other"), "x",
                                               "govedge/v1/gateway//batch"]


def hub_example(rig: Rig, data) -> None:
    hostile = data.draw(st.lists(st.tuples(st.sampled_from(BATCH_TOPICS), hostile_batch(rig)), min_size=1, max_size=2))
    rig.last = [("hub", topic, payload) for topic, payload in hostile]
    hub_keeps_its_word(rig, hostile)


@campaign(short=100, soak=3000)
@given(st.data())
def test_hostile_batches_are_stored_or_rejected_one_by_one_and_good_ones_still_pass(rig, data):
    hub_example(rig, data)


# -- the generator itself ------------------------------------------------------------------------


def test_the_tree_writes_back_the_firmwares_bytes_exactly(rig):
    # mutations start from what the node really sends: parse and encode must change nothing
    for message in (rig.good(WITNESS, 1), rig.world.message(OTHER), rig.batch(7, [rig.good(OTHER, 1)])):
        assert fg.encode(fg.parse(message)) == message


def test_the_tree_writes_what_no_encoder_writes():
    assert fg.encode(fg._widened(fg.of(1), 27)) == b"\x1b" + bytes(7) + b"\x01"  # non-shortest head
    assert fg.encode(fg.Item(4, 3, items=[fg.of(1)])) == b"\x83\x01"  # a length that lies
    assert fg.encode(fg.Item(5, 2, items=[fg.of(0), fg.of(1), fg.of(0), fg.of(2)])) == b"\xa2\x00\x01\x00\x02"
    assert fg.encode(fg.Item(4, 1, fg.INDEFINITE, items=[fg.of(1)])) == b"\x9f\x01\xff"
    assert fg.encode(fg.tag(2**64 - 1, fg.of(0))) == b"\xdb" + b"\xff" * 8 + b"\x00"
    assert fg.encode(fg.float_item(math.inf, 25)) == b"\xf9\x7c\x00"


# -- kept inputs ----------------------------------------------------------------------------------


def kept_inputs() -> list:
    """Every kept input: its file, what it broke, where it goes (gateway or hub), the topic it came on
    (a device message's own topic unless the file says), and its bytes.

    A file with an "# open:" line keeps an input that still breaks something, in a file of another
    owner: its replay is expected to fail (strictly: once fixed, the line must go)."""
    out = []
    for path in sorted(REGRESSIONS.glob("*.hex")):
        fields, digits = {"feed": "gateway"}, []
        for line in path.read_text().splitlines():
            key = re.match(r"# (broke|feed|topic|open): ?(.*)", line)
            if key:
                fields[key.group(1)] = key.group(2).strip()
            elif not line.startswith("#"):
                digits.append(line)
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=fields["open"])] if "open" in fields else []
        out.append(pytest.param(path.name, fields.get("broke"), fields["feed"], fields.get("topic"),
                                bytes.fromhex("".join(digits)), id=path.name, marks=marks))
    return out


def test_every_kept_input_says_what_it_broke():
    kept = kept_inputs()
    assert kept, f"no kept inputs in {REGRESSIONS}"
    for name, broke, feed, _, _ in (k.values for k in kept):
        assert broke, f"{name} has no '# broke:' line"
        assert feed in ("gateway", "hub"), f"{name}: feed {feed!r} is not gateway or hub"


@pytest.mark.parametrize("name, broke, feed, topic, data", kept_inputs())
def test_kept_inputs_that_once_broke_something_are_handled(rig, name, broke, feed, topic, data):
    if feed == "hub":  # a whole batch, as delivered
        hub_keeps_its_word(rig, [(topic or topics.batch(GATEWAY), data)])
        return
    # a device message: at the gateway, and inside a batch the gateway signs at the hub
    hub_stores_what_the_gateway_signed(rig, gateway_keeps_its_word(rig, [(topic or topics.reading(HOSTILE), data)]))
    hub_keeps_its_word(rig, [(topics.batch(GATEWAY), rig.batch(1001, [rig.good(OTHER, 5), data]))])


# -- coverage-guided, for long hunts: libFuzzer's bytes drive the same strategies ----------------


def keep(inputs: list[tuple[str, str, bytes]], broke: str, folder: Path) -> list[Path]:
    """Inputs in the format of tests/gateway/fuzz_regressions/, named by their SHA-256."""
    out = []
    for feed, topic, payload in inputs:
        path = folder / f"found-{hashlib.sha256(payload).hexdigest()[:16]}.hex"
        digits = payload.hex()
        path.write_text(f"# broke: {broke}\n# feed: {feed}\n# topic: {topic}\n"
                        + "\n".join(digits[i:i + 64] for i in range(0, len(digits), 64)) + "\n")
        out.append(path)
    return out


def hunt(argv: list[str]) -> None:
    """PYTHONPATH=tests python tests/gateway/test_fuzz_pipeline.py gateway|hub [libFuzzer options, e.g. -runs=100000 -max_len=4096]

    atheris (pip install atheris; not a dependency of the suite) mutates the bytes hypothesis draws
    from, guided by the coverage of the gateway's and hub's code, through hypothesis's
    fuzz_one_input: the same hostile messages, properties and rig as the tests. The inputs of a
    failing example are written to the working directory as found-*.hex, ready for
    tests/gateway/fuzz_regressions/ once the line saying what they broke is checked."""
    import atheris

    example = {"gateway": gateway_example, "hub": hub_example}[argv[1]]
    rig = Rig(Path(tempfile.mkdtemp(prefix="govedge-fuzz-")))

    @settings(database=None, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    @given(st.data())
    def one(data):
        try:
            example(rig, data)
        except Exception as exc:
            line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            for path in keep(rig.last, line, Path.cwd()):
                print(f"kept {path}")
            raise

    atheris.instrument_all()
    atheris.Setup([argv[0], *argv[2:]], one.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    import sys

    hunt(sys.argv)
