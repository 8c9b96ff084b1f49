"""`govedge bench hub --json`: readings per second through the hub's ingest service.

Gateway batches of pre-signed readings of many devices are published to a real
Mosquitto; the hub (`govedge hub run`, its own processes, default configuration
but for the addresses, SQLite store) takes them from its shared subscription,
checks the gateway's and every device's signature, and commits them. The
limit it is held against, P-256 verifications per second with cryptography on
one core, is measured in the same run (the same definition as the gateway's).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import batch, topics
from govedge.tools.dev.bench_gateway import (TARGET_RATIO, _cpu_s, _firmware_modules, _peak_rss_kib, _signed, bench_devices,
                            verify_limit_per_s)
from govedge.tools.dev.broker import Mosquitto


def bench_hub(devices: int = 500, batches: int = 40, per_batch: int = 500, workers: int | None = None) -> dict:
    reading = _firmware_modules()
    with tempfile.TemporaryDirectory(prefix="govedge-bench-hub-") as tmp:
        base = Path(tmp)
        keys = bench_devices(devices, base / "registry.json")
        gw_key = ec.generate_private_key(ec.SECP256R1())
        pem = base / "gateway.pem"
        pem.write_bytes(gw_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        now = int(time.time())
        names = list(keys)
        total = batches * per_batch
        messages = [_signed(reading, keys[names[i % devices]], names[i % devices], i // devices, now - total + i)
                    for i in range(total)]
        signed = [batch.sign(gw_key, "gw-bench", b, now, messages[b * per_batch:(b + 1) * per_batch], [])[0]
                  for b in range(batches)]
        verify = f"verify_workers = {workers}\n" if workers is not None else ""
        with Mosquitto(base / "broker", extra_config="max_queued_messages 0\n") as broker:
            (base / "hub.toml").write_text(
                f'[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\n{verify}'
                f'[store]\nurl = "hub.db"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\n')
            subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "add-gateway", "--config",
                            str(base / "hub.toml"), "gw-bench", str(pem)], check=True, capture_output=True)
            log_path = base / "hub.log"
            with open(log_path, "ab") as log:
                hub = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "hub", "run", "--config",
                                        str(base / "hub.toml")], stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 30
                while b"hub: subscribed" not in log_path.read_bytes():
                    if time.monotonic() > deadline or hub.poll() is not None:
                        raise RuntimeError("hub did not start: " + log_path.read_text()[-500:])
                    time.sleep(0.02)
                time.sleep(0.3)  # the subscription is in place at the broker
                pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-gateway")
                pub.connect("127.0.0.1", broker.port)
                pub.loop_start()
                cpu_before = _cpu_s(hub.pid)
                start = time.time()
                for info in [pub.publish(topics.batch("gw-bench"), b, qos=1) for b in signed]:
                    info.wait_for_publish(60)
                db = sqlite3.connect(base / "hub.db")
                deadline = time.monotonic() + 300
                while db.execute("SELECT count(*) FROM batches").fetchone()[0] < batches:
                    if time.monotonic() > deadline or hub.poll() is not None:
                        raise RuntimeError("not every batch was stored: " + log_path.read_text()[-500:])
                    time.sleep(0.02)
                cpu_after = _cpu_s(hub.pid)
                last = db.execute("SELECT max(received_at) FROM batches").fetchone()[0]
                stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
                rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
                db.close()
                rss_kib = _peak_rss_kib(hub.pid)
                pub.loop_stop()
            finally:
                hub.terminate()
                hub.wait(20)
        if stored != total or rejected:
            raise RuntimeError(f"{stored} of {total} readings stored, {rejected} batches rejected")
        limit = verify_limit_per_s()
        rate = total / (last - start)
        return {
            "readings": total,
            "batches": batches,
            "devices": devices,
            "workers": _workers_of(base),
            "readings_per_s": round(rate, 1),
            "verify_limit_per_s": round(limit, 1),
            "ratio": round(rate / limit, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": rate / limit >= TARGET_RATIO,
            "rss_mb": round(rss_kib / 1024, 1),
            "main_cpu_us_per_reading": round((cpu_after[0] - cpu_before[0]) / total * 1e6, 1),
            "workers_cpu_us_per_reading": round((cpu_after[1] - cpu_before[1]) / total * 1e6, 1),
        }


def _workers_of(base: Path) -> int:
    from govedge.hub.config import load

    return load(base / "hub.toml").verify_workers


def main_json(**kw) -> str:
    return json.dumps(bench_hub(**kw), indent=2)
