"""Virtual sensor nodes for the tests: the real firmware under the MicroPython
unix port (or CPython), a folder as the board's flash, simulated sensor chips,
and an MQTT collector that verifies what arrives."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from govedge.core import topics, wire
from govedge.tools.field import firmware
from govedge.tools.dev import sim
from govedge.tools.field.provision import provision
from govedge.core.registry import Registry

SIM_DIR = sim.DIR


class VirtualNode:
    """One board: its flash is `root`, its program the firmware's main.py."""

    def __init__(self, root: Path, build_dir: Path, registry_path: Path, device_id: str,
                 broker_port: int, sensors=("bme280",), interpreter: str = "micropython",
                 heap_kib: int | None = None, **overrides):
        # sensors=() gives a node without sensors: it sends status records only
        self.root = Path(root)
        self.build_dir = build_dir
        self.device_id = device_id
        self.interpreter = interpreter
        self.heap_kib = heap_kib
        devices = self.root.parent / (self.root.name + "-provisioning")
        provision(device_id, "rpi" if interpreter == "cpython" else "esp32", list(sensors) or ["bme280"],
                  registry_path, devices, broker_host="127.0.0.1", broker_port=broker_port)
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("device.key", "config.json"):
            (self.root / name).write_bytes((devices / device_id / name).read_bytes())
        cfg = json.loads((self.root / "config.json").read_text())
        cfg["board"] = "sim" if interpreter == "micropython" else "rpi_sim"
        cfg["interval_s"] = 0.2
        cfg["watchdog_s"] = 30
        if not sensors:
            cfg["sensors"] = {}
        for key, value in overrides.items():
            cfg[key] = value
        self.config = cfg
        self.write_config()
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def write_config(self):
        (self.root / "config.json").write_text(json.dumps(self.config))

    def sim(self, **settings):
        """Change the simulated world (sensor values, faults) the running node sees."""
        path = self.root / "sim.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        tmp.replace(path)

    def start(self):
        if self.interpreter == "micropython":
            # what a board holds: the .mpy build, plus the simulated chips
            cmd, env = firmware.micropython_command(
                [str(self.build_dir / "main.py")], [self.build_dir, SIM_DIR], self.heap_kib)
        else:
            # a Linux Raspberry Pi runs the firmware's source with CPython
            cmd = [sys.executable, str(firmware.FIRMWARE_DIR / "main.py")]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in [firmware.FIRMWARE_DIR, SIM_DIR]))
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc):
        for raw in proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def kill(self):
        """Power cut: SIGKILL, no chance to finish anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader:
            self._reader.join(5)

    def stop(self):
        self.kill()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc and self.proc.poll() is not None and self._reader and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"node log has no line matching {pattern!r}:\n{self.log[-3000:]}")


class Collector:
    """A persistent-session MQTT subscriber that keeps every node message it gets and, standing in
    for the gateway, acknowledges each once it has recorded it: the sequence number on the device's
    ack topic, QoS 1, not retained (docs/FORMAT.md). `acking` False: it records and says nothing
    (a gateway that never commits); `ack_delay` seconds: it answers that much later; `lose`: sequence
    numbers whose next arrival it drops unrecorded and unacknowledged (a broker that lost them)."""

    def __init__(self, port: int, registry_path: Path, client_id: str = "test-collector", ca: Path | None = None,
                 acking: bool = True, ack_delay: float = 0.0):
        self.port = port
        self.registry_path = registry_path
        self.messages: list[tuple[str, bytes]] = []
        self.acks: list[tuple[str, int]] = []  # (device, seq) in the order they were published
        self.acking = acking
        self.ack_delay = ack_delay
        self.lose: set[int] = set()
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        try:
            r = wire.decode_unverified(bytes(msg.payload))
        except Exception:
            r = None  # the gateway quarantines what it cannot read: nothing to acknowledge here
        with self.lock:
            if r is not None and r.seq in self.lose:
                self.lose.discard(r.seq)
                return
            self.messages.append((msg.topic, bytes(msg.payload)))
        if not self.acking or r is None:
            return
        if self.ack_delay:
            threading.Timer(self.ack_delay, self.ack, (r.device_id, [r.seq])).start()
        else:
            self.ack(r.device_id, [r.seq])

    def ack(self, device: str, seqs: list[int]):
        """Tell the device that the messages numbered seqs are committed."""
        with self.lock:
            self.acks.extend((device, seq) for seq in sorted(set(seqs)))
        for payload in topics.ack_payloads(seqs):
            self.client.publish(topics.ack(device), payload, qos=1, retain=False)

    def received(self, kind: str = "reading", device: str | None = None) -> list[int]:
        """Sequence numbers of every message that arrived, repeats included, in arrival order."""
        return [r.seq for r in self.verified(kind) if device is None or r.device_id == device]

    def verified(self, kind: str = "reading") -> list[wire.Reading]:
        """Every message on the kind's topics, verified (raises on any bad one), in arrival order."""
        registry = Registry.load(self.registry_path)
        with self.lock:
            msgs = list(self.messages)
        return [wire.verify(payload, registry) for topic, payload in msgs if topic.endswith("/" + kind)]

    def wait_for(self, count: int, kind: str = "reading", device: str | None = None, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.verified(kind) if device is None or r.device_id == device]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(got)} of {count} {kind} messages arrived within {timeout} s")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a broker certificate it signed for 127.0.0.1 and localhost: (ca.pem, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {folder.name}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
