"""The wheel, installed (not editable) into a fresh virtual environment outside the checkout with the
extras of a gateway Pi and a technician's laptop ([gateway,field]): provisioning and the wiring drawings
read the pin maps it carries, the firmware builds from the modules it carries and signs a reading under
MicroPython, and `govedge gateway run` takes that reading from a real Mosquitto, stores it and forwards
it in a signed batch. Nothing in the virtual environment can see the checkout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.deploy import HubSubscriber, gateway_key
from govedge.core import topics
from govedge.core.registry import BOARDS
from govedge.tools.dev.broker import Mosquitto
from govedge.tools.field import firmware
from support import MPY_PRELUDE, hex_lines

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# the checkout's local state, which a wheel is not built from
LOCAL_STATE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "*.egg-info", "build", "dist",
                                     ".pytest_cache", ".hypothesis", "*.mpy", "demo-run", "tests")
DEVICE = "esp32-0001"
GATEWAY = "gw-test-01"  # deploy.HubSubscriber's


def _run(cmd: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (setuptools writes into the folder it builds)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, tmp / "src", ignore=LOCAL_STATE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp / "dist", tmp / "src"],
         cwd=tmp, timeout=300)
    [built] = (tmp / "dist").glob("govchain_edge-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its [gateway] and [field] extras; its folder."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", venv], cwd=venv)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[gateway,field]"], cwd=venv, timeout=600)
    return venv


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Where the installed commands run: a folder outside the checkout."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def provisioned(installed, work) -> Path:
    """The registry of one device provisioned by the installed `govedge provision`."""
    _run([installed / "bin" / "govedge", "provision", DEVICE, "--board", "esp32", "--registry", "registry.json",
          "--out", "devices"], cwd=work)
    return work / "registry.json"


def test_the_wheel_carries_firmware_pins_and_run_time_files_inside_govedge(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"govedge/firmware/{p.name}" for p in firmware.sources()} <= names
    assert {f"govedge/hardware/pins/{board}.json" for board in (*BOARDS, "gateway")} <= names
    assert {f"govedge/hardware/wiring/{board}.svg" for board in BOARDS} <= names
    assert {"govedge/anchor/contracts/Anchor.json", "govedge/gateway/govedge-gateway.service",
            "govedge/gateway/govedge-gateway-web.service",
            "govedge/hub/govedge-hub@.service"} <= names  # what gateway install and hub install write units from
    # the status pages, with the files they share
    assert {"govedge/core/web/index.html", "govedge/core/web/page.js", "govedge/core/web/page.css",
            "govedge/gateway/web/app.js", "govedge/hub/web/app.js"} <= names
    # the firmware's modules import each other by bare name; none of them lands on the desktop's sys.path
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"govedge"}


def test_a_gateway_install_has_no_developer_packages_and_finds_its_data_inside_itself(installed, work):
    probe = ("import importlib.util, sys\n"
             "from govedge.tools.field import firmware, provision\n"
             "print(firmware.FIRMWARE_DIR); print(provision.PINS_DIR)\n"
             "print([m for m in ('eth_tester', 'amqtt', 'web3', 'psycopg') if importlib.util.find_spec(m)])\n")
    fw_dir, pins_dir, extra = _run([installed / "bin" / "python", "-c", probe], cwd=work).stdout.splitlines()
    assert Path(fw_dir).is_relative_to(installed) and Path(pins_dir).is_relative_to(installed)
    assert extra == "[]"
    assert not (installed / "bin" / "micropython").exists()
    assert "gateway" in _run([installed / "bin" / "govedge", "--help"], cwd=work).stdout


def test_provision_and_the_wiring_drawings_read_the_installed_pin_maps(installed, work, provisioned):
    pins = json.loads((REPO / "hardware" / "pins" / "esp32.json").read_text())
    config = json.loads((work / "devices" / DEVICE / "config.json").read_text())
    assert config["sensors"]["bme280"] == pins["bme280"]
    assert DEVICE in json.loads(provisioned.read_text())["devices"]
    wiring = [installed / "bin" / "python", "-m", "govedge.tools.field.wiring"]
    _run([*wiring, "--check"], cwd=work)  # the drawings it carries match the pin maps it carries
    _run([*wiring, "--out", "wiring"], cwd=work)
    assert (work / "wiring" / "esp32.svg").read_text() == (REPO / "hardware" / "wiring" / "esp32.svg").read_text()


@pytest.fixture(scope="module")
def signed_reading(installed, work, provisioned) -> tuple[bytes, int]:
    """A reading signed with the device's key by the firmware the installed package builds, under MicroPython."""
    build = work / "build"
    _run([installed / "bin" / "python", "-c",
          f"from pathlib import Path\nfrom govedge.tools.field import firmware\nfirmware.build(Path({str(build)!r}), "
          "board='esp32')"], cwd=work)
    assert {p.name for p in build.iterdir()} >= {"main.py", "reading.mpy", "board_esp32.mpy", "umqtt"}
    assert not (build / "board_picow.mpy").exists()
    d = int((work / "devices" / DEVICE / "device.key").read_text(), 16)
    now = int(time.time())
    script = MPY_PRELUDE + (f"import reading\nout(reading.signed_reading({d}, {DEVICE!r}, 0, {now}, "
                            "[('temp', 'Cel', (215, -1))]))\n")
    proc = firmware.run_micropython(script, path=[build])  # the suite's unix port: [gateway,field] has none
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    [message] = hex_lines(proc.stdout.decode())
    return message, now


def test_gateway_run_stores_and_forwards_a_signed_reading_from_mosquitto(installed, work, provisioned,
                                                                          signed_reading):
    message, _ = signed_reading
    folder = work / "gateway"
    folder.mkdir()
    _, public_key = gateway_key(folder)
    with Mosquitto(work / "broker") as broker:
        (folder / "gateway.toml").write_text(
            f'[gateway]\nid = "{GATEWAY}"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "{provisioned}"\n'
            f'[ingest.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            f'[hub]\nhost = "127.0.0.1"\nport = {broker.port}\nrate_per_s = 0\n'
            '[batch]\ninterval_s = 0.5\n[metrics]\nport = 0\n')
        hub = HubSubscriber(broker.port, provisioned, public_key)
        log_path = folder / "gateway.log"
        with open(log_path, "wb") as log:
            gateway = subprocess.Popen([installed / "bin" / "govedge", "gateway", "run", "--config", "gateway.toml"],
                                       cwd=folder, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while b"ingest: subscribed" not in log_path.read_bytes():
                assert gateway.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            publisher = paho.Client(paho.CallbackAPIVersion.VERSION2)
            publisher.connect("127.0.0.1", broker.port)
            publisher.loop_start()
            publisher.publish(topics.reading(DEVICE), message, qos=1).wait_for_publish(10)
            publisher.loop_stop()
            publisher.disconnect()
            # at the hub's end, in a batch whose gateway and device signatures both check
            hub.wait_for(lambda: hub.readings() == [(DEVICE, 0)], what="the reading in a verified batch")
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(20) == 0, log_path.read_text()
        finally:
            if gateway.poll() is None:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
            hub.close()
    with sqlite3.connect(folder / "data" / "gateway.db") as db:
        assert db.execute("SELECT device_id, seq FROM readings").fetchall() == [(DEVICE, 0)]


def test_a_command_whose_extra_is_missing_names_it_in_one_line(installed, work, provisioned):
    folder = work / "evm"
    folder.mkdir()
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "gateway.key").write_bytes(key)
    (folder / "anchor.key").write_text("11" * 32 + "\n")
    (folder / "gateway.toml").write_text(
        f'[gateway]\nid = "{GATEWAY}"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "{provisioned}"\n'
        '[metrics]\nport = 0\n[anchor]\nbackend = "evm"\n'
        '[anchor.evm]\nrpc_url = "http://127.0.0.1:9"\ncontract = "0x' + "00" * 20 + '"\nkey_file = "anchor.key"\n')
    proc = subprocess.run([installed / "bin" / "govedge", "gateway", "run", "--config", "gateway.toml"], cwd=folder,
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (
        2, "govedge gateway: no module 'web3'; it comes with the [evm] extra: pip install 'govchain-edge[evm]'\n")
