"""A running gateway for tests: the real service object in a thread of the test, with real brokers (local
and hub) and a hub-side subscriber that verifies every batch; status and metrics read as an operator
reads them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.anchor import Receipt
from govedge.core import topics
from govedge.gateway import config as gwconfig
from govedge.gateway import health
from govedge.gateway.metrics import GatewayCollector
from govedge.gateway.service import Gateway
from govedge.gateway.supervise import Backoff
from govedge.tools.dev.broker import Mosquitto

from . import wait_until
from .deploy import GATEWAY_ID, HubSubscriber
from .hubkit import World, publish


class FakeChain:
    """An anchor backend that confirms every root at once."""

    name = "fake"

    def __init__(self):
        self.roots: list[bytes] = []

    def submit(self, root: bytes, number: int) -> Receipt:
        self.roots.append(root)
        return Receipt("fake", "fake-chain", root, f"tx-{number}", block=number + 1, block_time=int(time.time()))

    def confirm(self, receipt: Receipt) -> Receipt:
        return receipt


class Running:
    def __init__(self, tmp_path: Path, anchor: bool = False, clock=None, metrics_port: int = 0):
        """``clock``: the gateway's notion of time and of its synchronization (govedge.gateway.clocksync);
        ``metrics_port``: the Prometheus endpoint's ([metrics] port; 0: none)."""
        self.world = World(tmp_path / "world", devices=2)
        self.local = Mosquitto(tmp_path / "local-broker").start()
        self.hub = Mosquitto(tmp_path / "hub-broker").start()
        folder = tmp_path / "gw"
        folder.mkdir()
        key = ec.generate_private_key(ec.SECP256R1())
        (folder / "gateway.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / "gateway.toml").write_text(
            f'[gateway]\nid = "{GATEWAY_ID}"\nkey_file = "gateway.key"\ndata_dir = "data"\n'
            f'registry = "{self.world.folder / "registry.json"}"\n[verify]\nworkers = 0\n'
            f'[ingest.mqtt]\nhost = "127.0.0.1"\nport = {self.local.port}\n'
            f'[hub]\nhost = "127.0.0.1"\nport = {self.hub.port}\nrate_per_s = 0\n'
            f'[batch]\ninterval_s = 0.2\nmax_readings = 50\n'
            + ('[anchor]\nepoch_s = 1\n' if anchor else '')
            + (f'[metrics]\nport = {metrics_port}\n' if metrics_port else ''))
        self.chain = FakeChain() if anchor else None
        self.gw = Gateway(gwconfig.load(folder / "gateway.toml"), anchor_backend=self.chain, clock=clock)
        self.gw.uplink.backoff = Backoff(first=0.5, cap=1.0)
        if self.gw.anchorer is not None:
            self.gw.anchorer.backoff = Backoff(first=0.5, cap=1.0)
        self.states: list[tuple[str, str, bool]] = []  # every state told, in order
        self.while_failed: dict[str, tuple[str, float]] = {}  # part: (status's line, uplink_connected metric)
        live_set = self.gw.live.set

        def recording(part, state, ok, failure=None):
            self.states.append((part, state, ok))
            live_set(part, state, ok, failure)
            if state.startswith(("failed", "the last pass failed")) and part not in self.while_failed:
                status = health.describe(health.status(self.gw.cfg))  # the service is this test process
                line = next((x for x in status.splitlines() if x.split()[:1] == [part]), "")
                self.while_failed[part] = (line, self.metric("govedge_uplink_connected"))

        self.gw.live.set = recording
        self.sub = HubSubscriber(self.hub.port, self.world.folder / "registry.json", key.public_key())
        self.thread = threading.Thread(target=self.gw.run, name="gateway-main", daemon=True)
        self.thread.start()
        wait_until(lambda: self.live("ingest").startswith("subscribed"), what="ingest subscribed")
        wait_until(lambda: self.gw.uplink.connected.is_set(), what="uplink connected")

    def live(self, part: str) -> str:
        doc = health.live(self.gw.cfg.data_dir) or {"parts": {}}
        return doc["parts"].get(part, {}).get("state", "")

    def send(self, n: int = 3) -> None:
        """``n`` readings of each device, published to the local broker."""
        publish(self.local.port, [(topics.reading(device), self.world.message(device))
                                  for device in self.world.devices for _ in range(n)])

    def hub_count(self) -> int:
        return len(self.sub.readings())

    def metric(self, name: str, **labels) -> float:
        for family in GatewayCollector(self.gw).collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        raise AssertionError(f"no metric {name} {labels}")

    def close(self):
        self.gw.stop()
        self.thread.join(20)
        self.sub.close()
        self.local.stop()
        self.hub.stop()


@pytest.fixture
def running(tmp_path):
    made = []

    def make(**kw):
        made.append(Running(tmp_path, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()
