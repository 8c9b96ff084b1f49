"""What `govedge gateway install` and `govedge hub install` configured, started for real: Mosquitto
with Debian's mosquitto.conf shape, which includes the installed conf.d, and TLS logins to it."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from govedge.tools.dev.broker import mosquitto_binary


def start_installed_broker(root: Path, folder: Path, port: int) -> subprocess.Popen:
    """Mosquitto with Debian's mosquitto.conf shape (our folder for its paths), which includes the
    configuration as installed; as root, Mosquitto must not switch to its own user here."""
    if not mosquitto_binary():
        pytest.fail("mosquitto is not installed (make test installs it)")
    (folder / "mosquitto-data").mkdir(exist_ok=True)
    conf = folder / "run.conf"
    conf.write_text(("user root\n" if os.geteuid() == 0 else "")
                    + f"pid_file {folder / 'mosquitto.pid'}\npersistence true\n"
                    + f"persistence_location {folder / 'mosquitto-data'}/\n"
                    + f"include_dir {root / 'etc/mosquitto/conf.d'}\n")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.05)


def tls_client(port: int, ca: Path, user: str, password: str, on_message=None, protocol=paho.MQTTv5,
               client_id: str | None = None) -> tuple[paho.Client, object]:
    """A client logged in over TLS (the loop running); its CONNACK's reason."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{os.urandom(3).hex()}",
                    protocol=protocol)
    c.username_pw_set(user, password)
    c.tls_set(ca_certs=str(ca))
    connected, result = threading.Event(), {}

    def on_connect(client, userdata, flags, reason, properties):
        result["reason"] = reason
        connected.set()

    c.on_connect = on_connect
    if on_message:
        c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(10)
    return c, result["reason"]
