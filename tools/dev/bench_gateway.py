"""`govedge bench gateway --json`: readings per second through the whole gateway.

Pre-signed readings of many devices are published to a real Mosquitto as fast
as it takes them, where they wait for the gateway's persistent session; the
gateway (its own processes, default configuration but for the addresses)
verifies, filters, aggregates, commits and forwards them in batches to a second
Mosquitto, where a subscriber notes what arrives. The limit it is held against,
P-256 verifications per second with cryptography on one core, is measured in
the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from govedge.core import confirm, topics, wire
from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto, free_port
from govedge.core.registry import Registry

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


def bench_devices(count: int, registry_path: Path) -> dict[str, ec.EllipticCurvePrivateKey]:
    """``count`` devices with fresh keys, provisioned into a registry at registry_path."""
    keys = {f"bench-{i:04d}": ec.generate_private_key(ec.SECP256R1()) for i in range(count)}
    registry = Registry(path=registry_path)
    for device, key in keys.items():
        registry.add(device, "esp32", ["bme280"], key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
    registry.save()
    return keys


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


def _peak_rss_kib(pid: int) -> int:
    """Peak resident memory of a process and its children (the verification workers)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1])
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += _peak_rss_kib(int(child))
    return total


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process, and of its children together."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own(pid), sum(own(c) for c in children)


def _block_writes(path: Path) -> tuple[int, int] | None:
    """(write requests completed, bytes written) of the block device holding ``path``, from its
    /sys/dev/block/MAJOR:MINOR/stat (the kernel's Documentation/block/stat.rst: fields 5 and 7, the
    latter in 512-byte sectors); None where the file system has no block device (tmpfs, overlays)."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    try:
        fields = stat.read_text().split()
    except OSError:
        return None
    return int(fields[4]), int(fields[6]) * 512


def _log_time(line: bytes) -> float:
    """The wall-clock time of a gateway log line (`asctime` format, milliseconds)."""
    stamp, ms = line[:23].decode().split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


class _HubCounter:
    """Subscribes to the hub broker, notes when each device message arrives (by its bytes) and confirms each
    batch to its gateway as the hub does (docs/FORMAT.md, "Acknowledgements between gateway and hub")."""

    def __init__(self, port: int):
        self.arrived: dict[bytes, float] = {}
        self.expected = 0
        self.done = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-hub")
        self.client.on_message = self._on_batch
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("govedge/v1/gateway/+/batch", qos=1)
        self.client.loop_start()

    def _on_batch(self, client, userdata, msg):
        t = time.time()
        body = cbor2.loads(cbor2.loads(msg.payload).value[2])
        for m in body["messages"]:
            self.arrived.setdefault(m, t)
        client.publish(topics.committed(body["gateway"]),
                       confirm.dumps(confirm.Confirmation("batch", body.get("store"), body["seq"], "stored")), qos=1)
        if len(self.arrived) >= self.expected:
            self.done.set()

    def wait(self, expected: int, timeout: float) -> None:
        self.expected = expected
        deadline = time.monotonic() + timeout
        while len(self.arrived) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.arrived)} of {expected} readings reached the hub")
            self.done.wait(0.1)
            self.done.clear()


def _publisher(port: int) -> paho.Client:
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-nodes")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def bench_gateway(devices: int = 500, per_device: int = 40, workers: int | None = None,
                  latency_rate: float = 500.0, latency_readings: int = 2000, synchronous: str | None = None) -> dict:
    """Throughput from a backlog, then latency under a steady load.

    Throughput: the readings wait in the local broker for the gateway's persistent
    session (as after a gateway restart), so that the publishers, which in the field
    are the nodes' own processors, do not share this machine's cores with the gateway;
    the clock runs from the gateway's connection to the last reading at the hub.
    Latency: further readings published at ``latency_rate`` per second, node publish
    to hub arrival, with the default batching.
    Disk: write requests and bytes the block device under the gateway's store completed
    during the backlog, per reading (the whole device: what else writes to it counts too);
    ``synchronous``: the store's [store] synchronous instead of the default.
    """
    reading = _firmware_modules()
    with tempfile.TemporaryDirectory(prefix="govedge-bench-gw-") as tmp:
        base = Path(tmp)
        keys = bench_devices(devices, base / "registry.json")
        now = int(time.time())
        rounds = per_device + -(-latency_readings // devices)
        messages = [(device, _signed(reading, key, device, seq, now - rounds + seq))
                    for seq in range(rounds) for device, key in keys.items()]
        backlog, paced = messages[:devices * per_device], messages[devices * per_device:][:latency_readings]
        gw_key = ec.generate_private_key(ec.SECP256R1())
        (base / "gateway.key").write_bytes(gw_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        # as `govedge gateway install` configures the gateway's broker: many messages in flight
        broker_conf = "max_queued_messages 0\nmax_inflight_messages 1000\n"
        verify = f"[verify]\nworkers = {workers}\n" if workers is not None else ""
        store = f'[store]\nsynchronous = "{synchronous}"\n' if synchronous is not None else ""
        with Mosquitto(base / "local", persistence=False, extra_config=broker_conf) as local, \
                Mosquitto(base / "hub", extra_config=broker_conf) as hub:
            metrics_port = free_port()
            (base / "gateway.toml").write_text(
                f'[gateway]\nid = "gw-bench"\nkey_file = "gateway.key"\ndata_dir = "data"\n'
                f'registry = "registry.json"\n[ingest.mqtt]\nport = {local.port}\n'
                f'[hub]\nhost = "127.0.0.1"\nport = {hub.port}\nrate_per_s = 0\n{verify}'
                # the node's own rate limit would hold back a burst of pre-signed readings
                f'[filter]\nrate = false\n{store}[metrics]\nport = {metrics_port}\n')
            from govedge.gateway import config

            cfg = config.load(base / "gateway.toml")
            # the gateway's persistent session, as its first start leaves it
            session = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cfg.ingest.client_id,
                                  clean_session=False)
            subscribed = threading.Event()
            session.on_subscribe = lambda *a: subscribed.set()
            session.connect("127.0.0.1", local.port)
            session.loop_start()
            session.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
            if not subscribed.wait(10):
                raise RuntimeError("the local broker did not confirm the gateway's subscription")
            session.disconnect()
            session.loop_stop()
            pub = _publisher(local.port)
            for info in [pub.publish(topics.reading(device), msg, qos=1) for device, msg in backlog]:
                info.wait_for_publish(60)
            counter = _HubCounter(hub.port)
            limit_before = verify_limit_per_s()
            log_path = base / "gateway.log"
            log = open(log_path, "ab")
            gw = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "gateway", "run", "--config",
                                   str(base / "gateway.toml")], stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 30
                while (connected := next((line for line in log_path.read_bytes().splitlines()
                                          if b"ingest: subscribed" in line), None)) is None:
                    if time.monotonic() > deadline or gw.poll() is not None:
                        raise RuntimeError("gateway did not start: " + log_path.read_text()[-500:])
                    time.sleep(0.01)
                cpu_before, disk_before = _cpu_s(gw.pid), _block_writes(base)
                counter.wait(len(backlog), 300)
                cpu_after, disk_after = _cpu_s(gw.pid), _block_writes(base)
                elapsed = max(counter.arrived.values()) - _log_time(connected)
                sent: dict[bytes, float] = {}
                start = time.time()
                for i, (device, msg) in enumerate(paced):
                    time.sleep(max(0.0, start + i / latency_rate - time.time()))
                    sent[msg] = time.time()
                    pub.publish(topics.reading(device), msg, qos=1)
                counter.wait(len(backlog) + len(paced), 120)
                rss_kib = _peak_rss_kib(gw.pid)
                scrape = scrape_ms(metrics_port)
            finally:
                pub.loop_stop()
                gw.terminate()
                gw.wait(20)
                counter.client.loop_stop()
                log.close()
        latencies = sorted(counter.arrived[m] - t for m, t in sent.items())
        # measured before and after; the higher (stricter) figure counts, since a shared
        # machine's speed wanders
        limit = max(limit_before, verify_limit_per_s())
        rate = len(backlog) / elapsed
        disk = None if disk_before is None or disk_after is None else (
            (disk_after[0] - disk_before[0]) / len(backlog), (disk_after[1] - disk_before[1]) / len(backlog))
        return {
            "readings": len(backlog),
            "devices": devices,
            "workers": cfg.verify_workers,
            "readings_per_s": round(rate, 1),
            "verify_limit_per_s": round(limit, 1),
            "ratio": round(rate / limit, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": rate / limit >= TARGET_RATIO,
            "latency_rate_per_s": latency_rate,
            "p99_latency_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
            "rss_mb": round(rss_kib / 1024, 1),
            # where the time goes: the main process (ingest, store, filter, batches, uplink) and
            # the verification workers, CPU microseconds per reading of the backlog
            "main_cpu_us_per_reading": round((cpu_after[0] - cpu_before[0]) / len(backlog) * 1e6, 1),
            "workers_cpu_us_per_reading": round((cpu_after[1] - cpu_before[1]) / len(backlog) * 1e6, 1),
            "synchronous": cfg.synchronous,
            # what the SD card would see: write requests and bytes per reading, null without a block device
            "disk_writes_per_reading": None if disk is None else round(disk[0], 3),
            "disk_bytes_per_reading": None if disk is None else round(disk[1], 1),
            # one scrape of the metrics endpoint with every reading of the run in the store, and the store's part
            # of a scrape on a store of a million readings
            "scrape_ms": round(scrape, 2),
            "scrape_store_ms_1m_readings": round(store_lookups_ms(base / "million.db"), 2),
        }


def scrape_ms(port: int, n: int = 20) -> float:
    """The median time of ``n`` scrapes of the gateway's metrics endpoint (HTTP on localhost included)."""
    took = []
    for _ in range(n):
        began = time.perf_counter()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1000


def store_lookups_ms(path: Path, readings: int = 1_000_000, n: int = 20) -> float:
    """The median time of what a scrape reads from gateway.db (govedge.gateway.metrics.lookups) on a store of
    ``readings`` readings in batches of 500, the hub behind by 100 batches, 50 epochs of which 2 unanchored."""
    from govedge.gateway import metrics
    from govedge.gateway.store import Store

    store = Store(path, "OFF")
    with store:
        store.db.executemany(
            "INSERT INTO readings (device_id, seq, kind, node_time, received_at, message, batch_seq) "
            "VALUES (?, ?, 'reading', ?, ?, ?, ?)",
            # a device's readings together, so that the store's unique index is built in order; what is in a
            # row does not change what the lookups read
            ((f"esp32-{i // 2000:04d}", i % 2000, i, 1.7e9 + i, b"\xa0", i // 500) for i in range(readings)))
        batches = readings // 500
        store.db.executemany("INSERT INTO batches (seq, created_at, size, root, cose) VALUES (?, ?, 500, ?, ?)",
                             ((seq, 1.7e9 + seq, b"\0" * 32, b"\0" * 300) for seq in range(batches)))
        store.advance("hub", batches - 101)
        store.db.executemany("INSERT INTO epochs (number, first_batch, last_batch, size, root, heads, closed_at, "
                             "confirmed) VALUES (?, 0, 0, 1, ?, ?, ?, ?)",
                             ((e, b"\0" * 32, b"\x80", 1.7e9 + e, int(e < 48)) for e in range(50)))
    store.close()
    took = []
    for _ in range(n):
        began = time.perf_counter()
        metrics.lookups(path)
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1000


def main_json(**kw) -> str:
    return json.dumps(bench_gateway(**kw), indent=2)
