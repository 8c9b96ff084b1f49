"""`govedge bench gateway --json`: readings per second through the whole gateway.

Pre-signed readings of many devices are published to a real Mosquitto as fast
as it takes them; the gateway (its own process, default configuration but for
the addresses) verifies, filters, aggregates, commits and forwards them in
batches to a second Mosquitto, where a subscriber counts what arrives. The
limit it is held against, P-256 verifications per second with cryptography on
one core, is measured in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import firmware, topics, wire
from .broker import Mosquitto
from .registry import Registry

TARGET_RATIO = 0.5


def _firmware_modules():
    sys.path.insert(0, str(firmware.FIRMWARE_DIR))
    try:
        import reading
    finally:
        sys.path.pop(0)
    return reading


def _signed(reading, key: ec.EllipticCurvePrivateKey, device: str, seq: int, t: int) -> bytes:
    # the node's own encoder for the payload; cryptography signs (faster than the node's signer)
    payload = reading.cbor.encode(reading.pack(seq, t, [("temp", "Cel", (2100 + seq % 50, -2)),
                                                         ("hum", "%RH", (4800, -2)), ("press", "Pa", 100800)]))
    protected = reading.protected_header(device.encode())
    r, s = decode_dss_signature(key.sign(wire.sig_structure(protected, payload), ec.ECDSA(hashes.SHA256())))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))


def verify_limit_per_s(seconds: float = 1.5) -> float:
    """P-256 verifications per second with cryptography, one core."""
    key = ec.generate_private_key(ec.SECP256R1())
    data = os.urandom(120)
    sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    pub = key.public_key()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        n += 100
    return n / (time.perf_counter() - start)


def bench_gateway(devices: int = 500, per_device: int = 20) -> dict:
    reading = _firmware_modules()
    with tempfile.TemporaryDirectory(prefix="govedge-bench-gw-") as tmp:
        base = Path(tmp)
        keys = {f"bench-{i:04d}": ec.generate_private_key(ec.SECP256R1()) for i in range(devices)}
        registry = Registry(path=base / "registry.json")
        for device, key in keys.items():
            registry.add(device, "esp32", ["bme280"], key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        registry.save()
        now = int(time.time())
        messages = [(device, _signed(reading, key, device, seq, now - per_device + seq))
                    for seq in range(per_device) for device, key in keys.items()]
        gw_key = ec.generate_private_key(ec.SECP256R1())
        (base / "gateway.key").write_bytes(gw_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        # as `govedge gateway install` configures the gateway's broker: many messages in flight
        broker_conf = "max_queued_messages 0\nmax_inflight_messages 1000\n"
        with Mosquitto(base / "local", persistence=False, extra_config=broker_conf) as local, \
                Mosquitto(base / "hub", extra_config=broker_conf) as hub:
            (base / "gateway.toml").write_text(
                f'[gateway]\nid = "gw-bench"\nkey_file = "gateway.key"\ndata_dir = "data"\n'
                f'registry = "registry.json"\n[ingest.mqtt]\nport = {local.port}\n'
                f'[hub]\nhost = "127.0.0.1"\nport = {hub.port}\nrate_per_s = 0\n'
                # the node's own rate limit would hold back a burst of pre-signed readings
                f'[filter]\nrate = false\n')
            arrived: dict[tuple[str, int], float] = {}
            done = threading.Event()
            total = len(messages)

            def on_batch(client, userdata, msg):
                t = time.perf_counter()
                body = cbor2.loads(cbor2.loads(msg.payload).value[2])
                for m in body["messages"]:
                    r = wire.decode(m)
                    arrived.setdefault((r.device_id, r.seq), t)
                if len(arrived) >= total:
                    done.set()

            sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-hub")
            sub.on_message = on_batch
            sub.connect("127.0.0.1", hub.port)
            sub.subscribe("govedge/v1/gateway/+/batch", qos=1)
            sub.loop_start()
            log = open(base / "gateway.log", "ab")
            gw = subprocess.Popen([sys.executable, "-m", "govedge.cli", "gateway", "run", "--config",
                                   str(base / "gateway.toml")], stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 20
                while b"ingest: subscribed" not in (base / "gateway.log").read_bytes():
                    if time.monotonic() > deadline or gw.poll() is not None:
                        raise RuntimeError("gateway did not start: " + (base / "gateway.log").read_text()[-500:])
                    time.sleep(0.05)
                pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-nodes")
                pub.max_inflight_messages_set(1000)
                pub.connect("127.0.0.1", local.port)
                pub.loop_start()
                sent: dict[tuple[str, int], float] = {}
                start = time.perf_counter()
                infos = []
                for i, (device, msg) in enumerate(messages):
                    key = (device, i // devices)
                    sent[key] = time.perf_counter()
                    infos.append(pub.publish(topics.reading(device), msg, qos=1))
                for info in infos:
                    info.wait_for_publish(60)
                if not done.wait(300):
                    raise RuntimeError(f"only {len(arrived)} of {total} readings reached the hub")
                elapsed = max(arrived.values()) - start
                rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{gw.pid}/status").read_text().splitlines()
                               if line.startswith("VmHWM:"))
                pub.loop_stop()
            finally:
                gw.terminate()
                gw.wait(20)
                sub.loop_stop()
                log.close()
        latencies = sorted(arrived[k] - sent[k] for k in sent)
        limit = verify_limit_per_s()
        rate = total / elapsed
        return {
            "readings": total,
            "devices": devices,
            "readings_per_s": round(rate, 1),
            "verify_limit_per_s": round(limit, 1),
            "ratio": round(rate / limit, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": rate / limit >= TARGET_RATIO,
            "p99_latency_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
            "rss_mb": round(rss_kib / 1024, 1),
            "workers": 1,
        }


def main_json(**kw) -> str:
    return json.dumps(bench_gateway(**kw), indent=2)
