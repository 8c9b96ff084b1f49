"""An MQTT broker of our own on a loopback port: for tests, benchmarks and the demo.

Production gateways run the system's Mosquitto with the configuration that
`govedge gateway install` writes; this starts a private one with a config
file in a folder of its own, so several can run side by side. Where Mosquitto
is not installed, the demo runs amqtt (a broker written in Python, installed
with the [dev] extra) instead: `local_broker()`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from govedge.core.errors import GovedgeError


class BrokerError(GovedgeError, RuntimeError):
    code = "broker"


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _BrokerProcess:
    """start() / stop() a broker process listening on 127.0.0.1:port."""

    name = "broker"

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 10.0):
        if self.proc and self.proc.poll() is None:
            return self
        command = self._command()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.name} exited with {self.proc.returncode}: "
                                  f"{self.log_path.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{self.name} did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Mosquitto(_BrokerProcess):
    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "",
                 persistence: bool = False):
        self.binary = mosquitto_binary()
        if not self.binary:
            raise BrokerError("mosquitto is not installed (Debian package 'mosquitto'; make test installs it)")
        super().__init__(workdir, port)
        self.extra_config = extra_config
        self.persistence = persistence

    def _command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            + (f"persistence true\npersistence_location {self.workdir}/\n" if self.persistence
               else "persistence false\n")
            # as root, Mosquitto would switch to its own user, who cannot read our private folder
            + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
            + "log_dest stderr\n"
            + "log_type error\nlog_type warning\nlog_type notice\n"
            + self.extra_config
        )
        return [self.binary, "-c", str(conf)]


class Amqtt(_BrokerProcess):
    """amqtt, MQTT 3.1.1 in Python: QoS 1 and persistent sessions, kept in memory only."""

    name = "amqtt"

    def _command(self) -> list[str]:
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]


def local_broker(workdir: Path, persistence: bool = False, prefer: str = "auto") -> _BrokerProcess:
    """Mosquitto when it is installed (or ``prefer="mosquitto"``), else amqtt (or ``prefer="amqtt"``)."""
    if prefer == "amqtt" or (prefer == "auto" and not mosquitto_binary()):
        return Amqtt(workdir)
    return Mosquitto(workdir, persistence=persistence)
