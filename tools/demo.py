"""`govedge demo`: a whole deployment on this machine, for real.

Several nodes run the firmware under the MicroPython unix port with simulated
sensor chips whose weather drifts, spikes and drops out; one node loses its
radio link for a while and replays its flash buffer afterwards; the gateway
verifies, filters, aggregates, batches and forwards; a hub-side subscriber
verifies every batch and every device signature in it. At the end: a summary,
and one reading traced from its node to the hub with its Merkle path.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import batch, firmware, merkle, sim, wire
from .annotate import annotate
from .broker import BrokerError, local_broker, mosquitto_binary
from .provision import provision
from .registry import Registry

GATEWAY_ID = "gw-demo-01"


class DemoNode:
    def __init__(self, root: Path, build: Path, registry: Path, device_id: str, port: int, sensors: list[str]):
        self.device_id = device_id
        self.root = root
        devices = root.parent / "provisioning"
        provision(device_id, "esp32", sensors, registry, devices, broker_host="127.0.0.1", broker_port=port)
        root.mkdir(parents=True, exist_ok=True)
        for name in ("device.key", "config.json"):
            (root / name).write_bytes((devices / device_id / name).read_bytes())
        cfg = json.loads((root / "config.json").read_text())
        cfg.update(board="sim", interval_s=1, status_every=10)
        if "sds011" in cfg["sensors"]:
            cfg["sensors"]["sds011"]["sim_interval_ms"] = 200
        (root / "config.json").write_text(json.dumps(cfg))
        self.world: dict = {}
        self.cmd, self.env = firmware.micropython_command([str(build / "main.py")], [build, sim.DIR])
        self.proc: subprocess.Popen | None = None

    def set_world(self, **values):
        self.world.update(values)
        tmp = self.root / "sim.json.tmp"
        tmp.write_text(json.dumps(self.world))
        tmp.replace(self.root / "sim.json")

    def start(self):
        log = open(self.root / "node.log", "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=self.root, env=self.env, stdout=log, stderr=log)
        log.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def delivered(self) -> int:
        """Every sequence number below this was acknowledged by the broker (the node's own record)."""
        proc = firmware.run_micropython("import counter; print(counter.FileCounter('buffer.dat.sent').load())",
                                        path=[self.root.parent / "build"], cwd=self.root)
        return int(proc.stdout or 0)


class Hub:
    """The hub's side: every batch verified, every device signature in it, duplicates dropped by id."""

    def __init__(self, port: int, registry: Path, gateway_key: ec.EllipticCurvePublicKey):
        self.registry = Registry.load(registry)
        self.gateway_key = gateway_key
        self.batches: dict[str, batch.Batch] = {}
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="demo-hub", clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("govedge/v1/gateway/+/batch", qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        try:
            b = batch.verify(msg.payload, lambda gw: [self.gateway_key] if gw == GATEWAY_ID else [],
                             self.registry)
        except wire.WireError as exc:
            with self.lock:
                self.refused.append(exc.reason)
            return
        with self.lock:
            self.batches.setdefault(b.id, b)

    def readings(self) -> dict[tuple[str, int], tuple[batch.Batch, int]]:
        with self.lock:
            found = {}
            for b in self.batches.values():
                for i, m in enumerate(b.messages):
                    r = wire.decode(m)
                    found[(r.device_id, r.seq)] = (b, i)
            return found

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _weather(t: float, i: int) -> dict:
    # a slow daily-like swing per node, a little noise
    return {"temp": round(18 + 4 * math.sin(t / 40 + i) + random.uniform(-0.05, 0.05), 2),
            "hum": round(55 + 10 * math.cos(t / 50 + i), 2),
            "press": int(100800 + 150 * math.sin(t / 70)),
            "pm2_5": round(8 + 3 * math.sin(t / 30 + i), 1), "pm10": round(14 + 4 * math.sin(t / 30 + i), 1)}


def run(nodes: int = 3, duration: float = 45.0, workdir: str | None = None, broker: str = "auto") -> int:
    if nodes < 1 or duration < 10:
        print("govedge demo: at least one node and 10 seconds")
        return 2
    with tempfile.TemporaryDirectory(prefix="govedge-demo-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        try:
            return _run(nodes, duration, base, broker)
        except BrokerError as exc:
            print(f"govedge demo: {exc}")
            return 2


def _run(count: int, duration: float, base: Path, broker: str) -> int:
    from .gateway.config import parse
    from .gateway.service import Gateway

    print(f"govchain-edge demo: {count} nodes, a gateway and a hub on this machine, for {duration:.0f} s\n")
    build = base / "build"
    files = firmware.build(build)
    local = local_broker(base / "local-broker", persistence=True, prefer=broker).start()
    hub_broker = local_broker(base / "hub-broker", persistence=True, prefer=broker).start()
    registry = base / "registry.json"
    nodes = [DemoNode(base / f"esp32-{i + 1:04d}", build, registry, f"esp32-{i + 1:04d}", local.port,
                      ["bme280", "sds011"] if i % 2 else ["bme280"]) for i in range(count)]
    gw_key = ec.generate_private_key(ec.SECP256R1())
    (base / "gateway.key").write_bytes(gw_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cfg = parse({
        "gateway": {"id": GATEWAY_ID, "key_file": "gateway.key", "data_dir": "gateway", "registry": "registry.json"},
        "ingest": {"mqtt": {"host": "127.0.0.1", "port": local.port}},
        "hub": {"host": "127.0.0.1", "port": hub_broker.port, "rate_per_s": 0},
        "batch": {"interval_s": 5, "max_readings": 200},
        "aggregate": {"window_s": 10, "lateness_s": 2},
        "filter": {"rate": {"readings": 120, "per_s": 60}},  # the demo's nodes read every second
    }, base=base)
    logging.basicConfig(filename=base / "gateway.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    gateway = Gateway(cfg)
    hub = Hub(hub_broker.port, registry, gw_key.public_key())
    hub.ready.wait(5)
    stop = threading.Event()
    gw_thread = threading.Thread(target=gateway.run, kwargs={"until": stop.is_set}, daemon=True)
    gw_thread.start()
    kind = "Mosquitto" if local.name == "mosquitto" else \
        "amqtt, embedded" + ("" if mosquitto_binary() else " (Mosquitto is not installed)")
    print(f"  brokers     {kind} "
          f"on 127.0.0.1:{local.port} (nodes, gateway) and :{hub_broker.port} (hub)")
    print(f"  firmware    {len(files)} files compiled with mpy-cross, run by MicroPython "
          f"{firmware.micropython_version()} (unix port), simulated BME280 and SDS011 chips")
    print(f"  nodes       {', '.join(n.device_id for n in nodes)}; {nodes[-1].device_id} loses its radio "
          f"link from {duration * 0.3:.0f} s to {duration * 0.6:.0f} s; {nodes[0].device_id}'s BME280 "
          f"spikes at {duration * 0.2:.0f} s and drops out at {duration * 0.7:.0f} s\n")
    start = time.monotonic()
    for i, n in enumerate(nodes):
        n.set_world(**_weather(0, i))
        n.start()
    forged_sent = False
    next_report = 5.0
    try:
        while (t := time.monotonic() - start) < duration:
            for i, n in enumerate(nodes):
                w = _weather(t, i)
                if i == 0 and abs(t - duration * 0.2) < 1.5:
                    w["temp"] = 84.9  # a spike the gateway's Hampel filter holds back
                if i == 0:
                    w["bme280_unplugged"] = duration * 0.7 < t < duration * 0.8
                if i == count - 1:
                    w["link_down"] = duration * 0.3 < t < duration * 0.6
                n.set_world(**w)
            if not forged_sent and t > duration * 0.5:
                _publish_forgery(local.port, nodes[0].device_id)
                forged_sent = True
            if t >= next_report:
                c = gateway.counters
                print(f"  {t:4.0f} s   verified {c['verified']:4d}   held back "
                      f"{sum(v for k, v in c.items() if k.startswith('held_back_')):3d}   quarantined "
                      f"{c['quarantined']}   batches {c['batches']:3d}   at the hub {len(hub.batches):3d}")
                next_report += 5
            time.sleep(1)
        for n in nodes:
            n.set_world(link_down=False, bme280_unplugged=False)
        time.sleep(4)  # the link is back: buffers drain
        for n in nodes:
            n.stop()
        delivered = {n.device_id: n.delivered() for n in nodes}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = hub.readings()
            if all((d, s) in got for d, upto in delivered.items() for s in range(upto)):
                break
            time.sleep(0.5)
        stop.set()
        gw_thread.join(15)
        return _summary(nodes, delivered, gateway, hub, base)
    finally:
        for n in nodes:
            n.stop()
        stop.set()
        hub.close()
        local.stop()
        hub_broker.stop()


def _publish_forgery(port: int, device_id: str) -> None:
    # someone without the device's key tries to speak for it
    import sys

    sys.path.insert(0, str(firmware.FIRMWARE_DIR))
    try:
        import reading
    finally:
        sys.path.pop(0)
    forged = reading.signed_reading(0x1234567890ABCDEF, device_id, 10**6, int(time.time()), [("temp", "Cel", 21)])
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="demo-intruder")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(f"govedge/v1/{device_id}/reading", forged, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _summary(nodes, delivered, gateway, hub, base: Path) -> int:
    c = gateway.counters
    got = hub.readings()
    signed = sum(delivered.values())
    missing = [(d, s) for d, upto in delivered.items() for s in range(upto) if (d, s) not in got]
    held = {k[len("held_back_"):]: v for k, v in c.items() if k.startswith("held_back_")}
    print("\nsummary")
    print(f"  acknowledged to the nodes               {signed} messages (readings and status records), "
          "as the nodes' flash records it")
    print(f"  verified by the gateway                 {c['verified']}")
    print(f"  held back by the filters                {sum(held.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(held.items())) or 'none'}); kept for audit")
    print(f"  quarantined                             {c['quarantined']} "
          f"({', '.join(k[len('quarantined_'):] for k in c if k.startswith('quarantined_')) or 'none'})")
    print(f"  batches delivered to the hub            {len(hub.batches)}, every signature checked there")
    print(f"  lost                                    {len(missing)}")
    print(f"  duplicates at the hub                   0 (batches de-duplicated by id: "
          f"{c['batches_delivered']} deliveries of {len(hub.batches)} batches)")
    if hub.refused:
        print(f"  refused at the hub                      {len(hub.refused)}: {hub.refused[0]}")
    if not got:
        return 1
    device, seq = sorted(got)[len(got) // 2]
    b, i = got[(device, seq)]
    msg = b.messages[i]
    r = wire.decode(msg)
    path = merkle.inclusion_proof(i, list(b.leaves))
    ok = merkle.verify_inclusion(merkle.leaf_hash(msg), i, b.size, path, b.root)
    values = ", ".join(f"{m.name} {m.value} {m.unit or ''}".strip() for m in r.measurements)
    print(f"\none reading from node to hub: {device} #{seq}")
    print(f"  node        signed on the node: {values}")
    print(f"  gateway     leaf {i} of batch {b.id} ({b.size} messages), root {b.root.hex()[:16]}...")
    print(f"  hub         batch signature by {b.gateway_id} checked, device signature checked, "
          f"Merkle path of {len(path)} hashes to the root: {'valid' if ok else 'INVALID'}")
    print(f"\nthe reading on the wire ({len(msg)} bytes, docs/FORMAT.md):")
    print(annotate(msg))
    print(f"\nlogs: {base}/gateway.log and each node's node.log")
    return 0 if not missing and ok and not hub.refused else 1
