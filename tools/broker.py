"""A Mosquitto broker of our own on a loopback port: for tests, benchmarks and the demo.

Production gateways run the system's Mosquitto with the configuration that
`govedge gateway install` writes; this starts a private one with a config
file in a folder of its own, so several can run side by side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """start() / stop() / restart() a Mosquitto on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "",
                 persistence: bool = False):
        self.binary = mosquitto_binary()
        if not self.binary:
            raise BrokerError("mosquitto is not installed (Debian package 'mosquitto'; make test installs it)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
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
        return conf

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        if self.proc and self.proc.poll() is None:
            return self
        conf = self._write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
