"""What the hub tests share: devices and a gateway with keys, their batches, a hub process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization

from govedge.core import batch, topics
from govedge.tools.dev.broker import Mosquitto
from govedge.hub.gateways import Gateways
from govedge.core.registry import Registry
from support.deploy import CliProcess
from support.postgres import PostgresServer
from support import firmware, private_key, scalar, sec1

GATEWAY = "gw-hub-test"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for a test module (import the fixture into it)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path):
    """The hub's Mosquitto, with persistence (import the fixture into the test module)."""
    with Mosquitto(tmp_path / "hub-broker", persistence=True) as b:
        yield b


class World:
    """Devices, a gateway, the files a hub reads, and signed batches on demand."""

    def __init__(self, folder: Path, devices: int = 3, store_url: str | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.devices = [f"esp32-{i:04d}" for i in range(1, devices + 1)]
        registry = Registry(path=folder / "registry.json")
        for device in self.devices:
            registry.add(device, "esp32", ["bme280"], sec1(scalar(device)))
        registry.save()
        self.gateway_key = private_key(scalar(GATEWAY))
        gateways = Gateways(path=folder / "gateways.json")
        gateways.add(GATEWAY, self.gateway_key.public_key())
        gateways.save()
        (folder / "gateway.pem").write_bytes(self.gateway_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.store_url = store_url or str(folder / "hub.db")
        self.next_seq = {d: 0 for d in self.devices}
        self.t0 = 1_764_400_000

    def gateway_keys(self, gateway_id: str) -> list:
        return [self.gateway_key.public_key()] if gateway_id == GATEWAY else []

    def hub_toml(self, port: int, client_id: str = "hub-worker-1", workers: int = 1, hub_extra: str = "") -> Path:
        """``hub_extra``: more [hub] lines (budgets, state_dir)."""
        path = self.folder / f"{client_id}.toml"
        path.write_text(
            f'[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\nverify_workers = {workers}\n'
            f'session_expiry_s = 600\n{hub_extra}[store]\nurl = "{self.store_url}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nclient_id = "{client_id}"\n')
        return path

    def message(self, device: str, seq: int | None = None, temp: int = 2150, key_of: str | None = None) -> bytes:
        if seq is None:
            seq = self.next_seq[device]
            self.next_seq[device] += 1
        reading = firmware("reading")
        return reading.signed_reading(scalar(key_of or device), device, seq, self.t0 + seq,
                                      [("temp", "Cel", (temp + seq % 7, -2)), ("press", "Pa", 100800 + seq)])

    def batch(self, seq: int, messages: list[bytes], key=None, gateway: str = GATEWAY,
              aggregates: list | None = None, mode: str = "raw") -> bytes:
        cose, _root = batch.sign(key or self.gateway_key, gateway, seq, self.t0 + 100 + seq, messages,
                                 aggregates or [], mode)
        return cose

    def batches(self, count: int, per_batch: int = 4, first_seq: int = 0) -> list[bytes]:
        out = []
        for b in range(first_seq, first_seq + count):
            out.append(self.batch(b, [self.message(self.devices[i % len(self.devices)]) for i in range(per_batch)]))
        return out


def publish(port: int, items: list[tuple[str, bytes]]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"gateway-uplink-{os.getpid()}-{time.time()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for info in [c.publish(topic, payload, qos=1) for topic, payload in items]:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def publish_batches(port: int, batches: list[bytes], gateway: str = GATEWAY) -> None:
    publish(port, [(topics.batch(gateway), b) for b in batches])


def hub_beside(folder: Path, registry: Path, gateway_id: str, gateway_public_key, broker_port: int,
               client_id: str = "hub-e2e") -> "HubProcess":
    """`govedge hub run` (not started) in ``folder`` that knows one gateway: its gateways file, a copy of the
    nodes' registry, a SQLite store ``hub.db`` and its config ``hub.toml``."""
    folder.mkdir(parents=True, exist_ok=True)
    gateways = Gateways(path=folder / "gateways.json")
    gateways.add(gateway_id, gateway_public_key)
    gateways.save()
    (folder / "registry.json").write_bytes(registry.read_bytes())
    toml = folder / "hub.toml"
    toml.write_text(f'[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\nverify_workers = 1\n'
                    f'session_expiry_s = 600\n[store]\nurl = "hub.db"\n[mqtt]\nhost = "127.0.0.1"\n'
                    f'port = {broker_port}\ntls = false\nclient_id = "{client_id}"\n')
    return HubProcess(toml)


class HubProcess(CliProcess):
    stop_timeout = 15.0

    def __init__(self, config: Path):
        self.config = config
        super().__init__(["hub", "run", "--config", str(config)], config.with_suffix(".log"))

    def wait_subscribed(self, times: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count("hub: subscribed") < times:
            assert self.proc.poll() is None, f"hub exited:\n{self.log[-2000:]}"
            assert time.monotonic() < deadline, f"hub did not subscribe:\n{self.log[-2000:]}"
            time.sleep(0.05)


