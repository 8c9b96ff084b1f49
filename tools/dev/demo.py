"""`govedge demo`: a whole deployment on this machine, for real.

Several nodes run the firmware under the MicroPython unix port with simulated
sensor chips whose weather drifts, spikes and drops out; one node loses its
radio link for a while and replays its flash buffer afterwards; the gateway
verifies, filters, aggregates, batches and forwards, and anchors its epochs
on an in-process EVM chain; the hub's ingest service verifies every batch and
every device signature in it and stores them. At the end: a summary, and one
reading's proof bundle from the hub checked link by link, the chain included.
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

from govedge.core import wire
from govedge.tools.field import firmware
from govedge.tools.dev import sim
from govedge.tools.dev.annotate import annotate
from govedge.tools.dev.broker import BrokerError, local_broker, mosquitto_binary
from govedge.tools.field.provision import provision
from govedge.core.registry import Registry

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
        """Every sequence number below this the gateway acknowledged as committed (the node's own record)."""
        proc = firmware.run_micropython("import counter; print(counter.FileCounter('buffer.dat.sent').load())",
                                        path=[self.root.parent / "build"], cwd=self.root)
        return int(proc.stdout or 0)


class DemoChain:
    """The govchain of the demo: an in-process EVM (web3's EthereumTesterProvider) with the
    anchor contract deployed on it, and the gateway's funded account."""

    def __init__(self, base: Path):
        from web3 import EthereumTesterProvider

        from govedge.anchor import evm

        self.provider = EthereumTesterProvider()
        funded = self.provider.ethereum_tester.backend.account_keys
        self.key_file = base / "anchor.key"
        self.key_file.write_text(funded[1].to_bytes().hex() + "\n")
        self.key_file.chmod(0o600)
        self.contract = evm.deploy(self.provider, funded[0].to_bytes())
        self.chain_id = evm.connect(self.provider).eth.chain_id

    def gateway_backend(self):
        from govedge.anchor.evm import EvmAnchor

        return EvmAnchor(self.provider, self.contract, self.key_file)

    def auditor_view(self):
        """The chain as an auditor asks it: read-only, no key."""
        from govedge.anchor.evm import EvmAnchor

        return EvmAnchor(self.provider, self.contract, None)


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
            return _run(nodes, duration, base, broker, kept=workdir is not None)
        except BrokerError as exc:
            print(f"govedge demo: {exc}")
            return 2


def _run(count: int, duration: float, base: Path, broker: str, kept: bool) -> int:
    from govedge.gateway.config import parse
    from govedge.gateway.service import Gateway

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
        "anchor": {"epoch_s": max(5.0, duration / 3)},  # a few epochs in a run
    }, base=base)
    logging.basicConfig(filename=base / "gateway.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    chain = DemoChain(base)
    gateway = Gateway(cfg, anchor_backend=chain.gateway_backend())
    hub = _start_hub(base, registry, gw_key, hub_broker)
    stop = threading.Event()
    gw_thread = threading.Thread(target=gateway.run, kwargs={"until": stop.is_set}, daemon=True)
    gw_thread.start()
    kind = "Mosquitto" if local.name == "mosquitto" else \
        "amqtt, embedded" + ("" if mosquitto_binary() else " (Mosquitto is not installed)")
    print(f"  brokers     {kind} "
          f"on 127.0.0.1:{local.port} (nodes, gateway) and :{hub_broker.port} (hub)")
    print(f"  govchain    in-process EVM (eip155:{chain.chain_id}), anchor contract {chain.contract}, "
          f"an epoch every {cfg.epoch_s:.0f} s")
    print(f"  hub         govedge hub service, SQLite {base / 'hub.db'}")
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
                      f"{c['quarantined']}   batches {c['batches']:3d}   at the hub "
                      f"{hub.service.counters['batches']:3d}   epochs anchored {c['epochs_anchored']}")
                next_report += 5
            time.sleep(1)
        for n in nodes:
            n.set_world(link_down=False, bme280_unplugged=False)
        time.sleep(4)  # the link is back: buffers drain
        for n in nodes:
            n.stop()
        delivered = {n.device_id: n.delivered() for n in nodes}
        wanted = {(d, s) for d, upto in delivered.items() for s in range(upto)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not wanted <= _hub_readings(hub):
            time.sleep(0.5)
        # the last epoch closes now, is anchored, and reaches the hub: then any reading can be proven
        gateway.batcher.request_epoch_close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _hub_epoch_batches(hub) < gateway.counters["batches"]:
            time.sleep(0.5)
        stop.set()
        gw_thread.join(15)
        hub.service.stop()
        hub.thread.join(15)
        return _summary(nodes, delivered, gateway, hub, chain, registry, base, kept)
    finally:
        for n in nodes:
            n.stop()
        stop.set()
        hub.service.stop()
        local.stop()
        hub_broker.stop()


class _Hub:
    def __init__(self, cfg, service, thread):
        self.cfg, self.service, self.thread = cfg, service, thread


def _start_hub(base: Path, registry: Path, gw_key, hub_broker) -> _Hub:
    from govedge.hub.config import HubConfig
    from govedge.hub.gateways import Gateways
    from govedge.hub.service import HubService
    from govedge.gateway.config import MqttEndpoint

    gateways = Gateways(path=base / "gateways.json")
    gateways.add(GATEWAY_ID, gw_key.public_key())
    gateways.save()
    # Mosquitto speaks MQTT 5: a shared subscription, as hub workers use; amqtt does not: one worker alone
    cfg = HubConfig(registry=registry, gateways=base / "gateways.json", store="sqlite://" + str(base / "hub.db"),
                    mqtt=MqttEndpoint(port=hub_broker.port, client_id="demo-hub"),
                    share_group="govedge-hub" if hub_broker.name == "mosquitto" else "", verify_workers=1)
    service = HubService(cfg)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    service.subscribed.wait(10)
    return _Hub(cfg, service, thread)


def _hub_store(hub: _Hub):
    from govedge.hub.store import HubStore

    return HubStore(hub.cfg.store)


def _hub_readings(hub: _Hub) -> set:
    store = _hub_store(hub)
    try:
        return store.reading_ids()
    finally:
        store.close()


def _hub_epoch_batches(hub: _Hub) -> int:
    """How many batches the hub's epochs cover."""
    store = _hub_store(hub)
    try:
        return store.batches_in_epochs()
    finally:
        store.close()


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


def _summary(nodes, delivered, gateway, hub: _Hub, chain: DemoChain, registry: Path, base: Path,
             kept: bool) -> int:
    from govedge.core import proof
    from govedge.hub.proofs import ProofUnavailable, bundle_for

    c = gateway.counters
    store = _hub_store(hub)
    try:
        got = store.reading_ids()
        batches, rejected, epochs = store.count("batches"), store.rejections(), store.count("epochs")
    finally:
        store.close()
    signed = sum(delivered.values())
    missing = [(d, s) for d, upto in delivered.items() for s in range(upto) if (d, s) not in got]
    held = {k[len("held_back_"):]: v for k, v in c.items() if k.startswith("held_back_")}
    h = hub.service.counters
    print("\nsummary")
    print(f"  acknowledged to the nodes               {signed} messages (readings and status records), "
          "as the nodes' flash records it")
    print(f"  verified by the gateway                 {c['verified']}")
    print(f"  held back by the filters                {sum(held.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(held.items())) or 'none'}); kept for audit")
    print(f"  quarantined                             {c['quarantined']} "
          f"({', '.join(k[len('quarantined_'):] for k in c if k.startswith('quarantined_')) or 'none'})")
    print(f"  batches stored by the hub               {batches}, every signature checked there")
    print(f"  lost                                    {len(missing)}")
    print(f"  duplicates at the hub                   {h['duplicates']} (stored once, by batch id)")
    print(f"  epochs anchored on the chain            {c['epochs_anchored']} "
          f"(gas paid by the gateway's account; {epochs} epoch records at the hub)")
    if rejected:
        print(f"  rejected at the hub                     {len(rejected)}: {rejected[0][1]}")
    if not got:
        return 1
    device, seq = sorted(got)[len(got) // 2]
    try:
        bundle = bundle_for(hub.cfg, device, seq)
    except ProofUnavailable as exc:
        print(f"\nno proof for {device} #{seq}: {exc}")
        return 1
    path = base / "proof.json"
    path.write_text(proof.dumps(bundle))
    msg = bytes.fromhex(bundle["reading"]["message"])
    r = wire.decode_unverified(msg)
    values = ", ".join(f"{m.name} {m.value} {m.unit or ''}".strip() for m in r.measurements)
    print(f"\none reading from node to chain: {device} #{seq}, signed on the node: {values}")
    print(f"  proof bundle {path} ({path.stat().st_size} bytes), from the hub's store, checked link by link:")
    ok = True
    try:
        # the gateway's account given, as an auditor gives the one registered for the gateway
        for line in proof.verify(bundle, Registry.load(registry), chain.auditor_view(),
                                 account=chain.gateway_backend().address):
            print(f"    {proof.status(line)}  {line}")
    except proof.ProofError as exc:
        print(f"    FAILED  {exc.link}: {exc.reason}")
        ok = False
    if kept:
        print(f"  the same by hand: govedge verify {path} --registry {registry}")
    else:
        print("  the same by hand: run the demo with --workdir DIR, then govedge verify DIR/proof.json "
              "--registry DIR/registry.json")
    print(f"\nthe reading on the wire ({len(msg)} bytes, docs/FORMAT.md):")
    print(annotate(msg))
    if kept:
        print(f"\nlogs: {base}/gateway.log and each node's node.log")
    return 0 if not missing and ok and not rejected else 1
