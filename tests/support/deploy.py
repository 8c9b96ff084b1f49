"""A deployment on one machine for the tests: the gateway as its own process
(`govedge gateway run`), the local broker the nodes publish to, the hub's
broker, and a hub-side subscriber that verifies every batch and every device
signature in it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import batch, confirm, redact, topics
from govedge.core.registry import Registry
from support import wait_until

GATEWAY_ID = "gw-test-01"


def gateway_key(folder: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "gateway.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path, key.public_key()


FILE_SETTINGS = {"key", "ca", "cert", "key_file"}  # paths of files, not secrets; a key file's contents are


def secrets_of(config: Path) -> set[str]:
    """What a service's configuration holds that must never reach its output: passwords and other secret
    settings, the secret parts of its URLs and DSNs (an RPC endpoint's path too), its private keys' PEM."""
    found: set[str] = set()

    def walk(node, name: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, name)
        elif isinstance(node, str):
            if name in FILE_SETTINGS:
                path = config.parent / node
                if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:200]:
                    found.update(line for line in path.read_text().splitlines() if len(line) >= 32)
            elif redact.is_secret_name(name):
                found.add(node)
            elif "://" in node or "password" in node:
                found.update(redact.secret_parts(node, paths=name == "rpc_url"))

    walk(tomllib.loads(config.read_text()), "")
    return {s for s in found if len(s) >= 6}


class CliProcess:
    """A `govedge` service (gateway run, hub run) as its own process group, its output in a log file.

    Every one started is listed in ``started``: tests/conftest.py checks after each test that none of
    them wrote a secret of its configuration to its log or its status file (``leaked``)."""

    stop_timeout = 10.0
    started: list["CliProcess"] = []

    def __init__(self, args: list[str], log_path: Path):
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def config_file(self) -> Path | None:
        return Path(self.args[self.args.index("--config") + 1]) if "--config" in self.args else None

    def outputs(self) -> list[Path]:
        """Where the service writes what people read: its log, and the gateway's live.json."""
        found = [self.log_path]
        if self.config_file is not None:
            found += sorted(self.config_file.parent.glob("**/live.json"))
        return [p for p in found if p.is_file()]

    def leaked(self) -> list[str]:
        """Each secret of the configuration found in an output, as 'file: the secret's first characters'."""
        if self.config_file is None or not self.config_file.is_file():
            return []
        secrets = secrets_of(self.config_file)
        return [f"{path}: {secret[:6]}..." for path in self.outputs() for secret in secrets
                if secret in path.read_text(errors="replace")]

    def start(self):
        CliProcess.started.append(self)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", *self.args], stdout=log, stderr=log,
                                         start_new_session=True)
        return self

    def kill(self):
        """SIGKILL to the whole group (the gateway's verification workers too)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class GatewayProcess(CliProcess):
    def __init__(self, folder: Path, registry: Path, local_port: int, hub_port: int, **settings):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key_path, self.public_key = gateway_key(folder)
        batch_cfg = {"interval_s": settings.pop("batch_interval_s", 0.5),
                     "max_readings": settings.pop("batch_max_readings", 100)}
        extra = settings.pop("extra", "")
        hub = settings.pop("hub", f'[hub]\nhost = "127.0.0.1"\nport = {hub_port}\nrate_per_s = 0\n')
        (folder / "gateway.toml").write_text(
            f'[gateway]\nid = "{GATEWAY_ID}"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "{registry}"\n\n'
            f'[ingest.mqtt]\nhost = "127.0.0.1"\nport = {local_port}\n\n'
            + hub + "\n"
            + f'[batch]\ninterval_s = {batch_cfg["interval_s"]}\nmax_readings = {batch_cfg["max_readings"]}\n'
            + extra
        )
        super().__init__(["gateway", "run", "--config", str(folder / "gateway.toml")], folder / "gateway.log")

    def wait_for_log(self, text: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway log has no {text!r}:\n{self.log[-3000:]}")


class HubSubscriber:
    """The hub's side for these tests: every batch verified, duplicates dropped by batch id, each confirmed to
    its gateway as the hub does (govedge.core.confirm), unless ``confirms`` is False."""

    def __init__(self, port: int, registry: Path, gateway_key: ec.EllipticCurvePublicKey, confirms: bool = True):
        self.confirms = confirms
        self.registry = Registry.load(registry)
        self.gateway_key = gateway_key
        self.batches: dict[str, batch.Batch] = {}
        self.deliveries = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-hub", clean_session=False)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("govedge/v1/gateway/+/batch", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect_async("127.0.0.1", port)  # the hub may be down when the test starts
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        try:
            b = batch.verify(msg.payload, lambda gw: [self.gateway_key] if gw == GATEWAY_ID else [],
                             self.registry)
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            with self.lock:
                self.errors.append(repr(exc))
            return
        with self.lock:
            self.deliveries += 1
            outcome = "duplicate" if b.id in self.batches else "stored"
            self.batches.setdefault(b.id, b)
        if self.confirms:
            client.publish(topics.committed(b.gateway_id),
                           confirm.dumps(confirm.Confirmation("batch", b.store_id, b.seq, outcome)), qos=1)

    def readings(self) -> list[tuple[str, int]]:
        """(device, seq) of every device message in the distinct batches, in batch order."""
        from govedge.core import wire

        with self.lock:
            ordered = sorted(self.batches.values(), key=lambda b: b.seq)
        out = []
        for b in ordered:
            for m in b.messages:
                r = wire.decode_unverified(m)
                out.append((r.device_id, r.seq))
        return out

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        wait_until(predicate, timeout, f"hub: {what}", detail=lambda: f"errors: {self.errors[:3]}")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()
