"""`govedge flash` and `govedge monitor` end to end against a virtual board
(tests/support/virtual_board.py): the real command in a subprocess, mpremote's serial
transport over a pseudo-terminal, every program it sends run by the MicroPython
unix port in the board's folder, then the node booted from that folder
publishing to a real Mosquitto, its readings verified against the registry."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto, free_port
from govedge.tools.field.provision import provision
from support.nodes import Collector
from support.virtual_board import VirtualBoard

DEVICE = "esp32-0051"


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def collector(broker, tmp_path):
    c = Collector(broker.port, tmp_path / "registry.json", client_id="flash-test")
    yield c
    c.close()


@pytest.fixture
def boards():
    made = []

    def make(folder: Path, **kw) -> VirtualBoard:
        made.append(VirtualBoard(folder / "flash", folder / "serial-by-id" / "usb-virtual-board", **kw))
        return made[-1]

    yield make
    for b in made:
        b.close()


def provisioned(tmp_path: Path, broker_port: int, device_id: str = DEVICE, board: str = "esp32") -> Path:
    """Provisioning's folder for a device the virtual board can run (board "sim": simulated chips)."""
    if not (tmp_path / "devices" / device_id).exists():
        provision(device_id, board, ["bme280"], tmp_path / "registry.json", tmp_path / "devices",
                  broker_host="127.0.0.1", broker_port=broker_port)
        configure(tmp_path, device_id, board="sim", interval_s=0.5)
    return tmp_path / "devices"


def configure(tmp_path: Path, device_id: str = DEVICE, **changes) -> None:
    path = tmp_path / "devices" / device_id / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "mqtt_port":
            cfg["mqtt"]["port"] = value
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg, indent=2))


def expected_files(tmp_path: Path) -> dict[str, bytes]:
    """What the board must hold: the firmware built for it and the device's files."""
    build = tmp_path / "expected"
    files = {p.relative_to(build).as_posix(): p.read_bytes() for p in firmware.build(build, board="sim")}
    for name in ("config.json", "device.key"):
        files[name] = (tmp_path / "devices" / DEVICE / name).read_bytes()
    return files


def govedge_flash(tmp_path: Path, board: VirtualBoard, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "govedge.tools.cli", "flash", DEVICE, "--port", board.port,
         "--devices", str(tmp_path / "devices"), "--registry", str(tmp_path / "registry.json"),
         "--timeout", "30", *extra],
        capture_output=True, text=True, timeout=120)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_flash_uploads_checks_and_starts_the_node_which_publishes_a_signed_reading(
        tmp_path, broker, collector, boards):
    provisioned(tmp_path, broker.port)
    board = boards(tmp_path)
    proc = govedge_flash(tmp_path, board)
    assert proc.returncode == 0, proc.stdout + proc.stderr + board.log[-2000:]
    assert f"{DEVICE} is running: first signed message #" in proc.stdout, proc.stdout
    assert f" delivered over its broker 127.0.0.1:{broker.port}" in proc.stdout

    expected = expected_files(tmp_path)
    on_board = board.files()
    assert {name: digest(on_board.get(name, b"")) for name in expected} == \
           {name: digest(data) for name, data in expected.items()}
    assert not [name for name in on_board if name.endswith(".part")]
    mtimes = {name: (board.root / name).stat().st_mtime_ns for name in expected}
    assert max(mtimes, key=mtimes.get) == "main.py", "main.py is written last"
    assert f"verified  {len(expected)} files" in proc.stdout

    # the node booted from the board's folder: its first reading reached the broker, signed by its key
    reading = collector.wait_for(1, device=DEVICE)[0]
    assert reading.device_id == DEVICE
    assert {m.name for m in reading.measurements} >= {"temp", "hum", "press"}

    # govedge monitor shows the board's log: press the reset button and see the node come up again
    monitor = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "monitor", "--port", board.port],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(monitor.stdout.readline, "")), daemon=True).start()
    try:
        assert "(Ctrl-C ends)" in monitor.stderr.readline()
        board.reset()
        deadline = time.monotonic() + 20
        while not any(f"node: {DEVICE} up" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        monitor.send_signal(signal.SIGINT)
        assert monitor.wait(10) == 0
    assert any(f"node: {DEVICE} up" in line for line in lines), lines


def test_a_cut_off_upload_is_resumed_and_never_leaves_a_half_written_file(tmp_path, broker, collector, boards):
    provisioned(tmp_path, broker.port)
    expected = expected_files(tmp_path)
    # the upload sends more than the files' bytes (each chunk goes as a Python literal): half of
    # their size on the line is early in the upload, in the middle of the firmware's modules
    board = boards(tmp_path, cut_after=sum(len(d) for d in expected.values()) // 2)
    proc = govedge_flash(tmp_path, board)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broke while writing" in proc.stdout and "reconnecting (attempt 2 of 3)" in proc.stdout

    # the filesystem as the power cut left it: complete files under their names, the one cut
    # short under its temporary name only, no main.py to boot into
    assert len(board.cuts) == 1
    at_cut = board.cuts[0]
    parts = {name: data for name, data in at_cut.items() if name.endswith(".part")}
    finals = {name: data for name, data in at_cut.items() if not name.endswith(".part")}
    assert parts, f"the cut came between two files: {sorted(at_cut)}"
    for name, data in parts.items():
        assert len(data) < len(expected[name[:-len(".part")]])
    assert "main.py" not in finals
    assert finals and all(data == expected[name] for name, data in finals.items())

    # the second attempt kept what was complete (by its SHA-256) and wrote the rest
    m = re.search(r"upload +(\d+) files written, (\d+) already in place", proc.stdout)
    assert m and (int(m[1]), int(m[2])) == (len(expected) - len(finals), len(finals)), proc.stdout
    on_board = board.files()
    assert all(on_board[name] == data for name, data in expected.items())
    assert not [name for name in on_board if name.endswith(".part")]
    assert collector.wait_for(1, device=DEVICE)[0].device_id == DEVICE


def test_flash_names_the_node_s_first_error_in_plain_words(tmp_path, broker, boards):
    provisioned(tmp_path, broker.port)
    configure(tmp_path, interval_s=0)
    board = boards(tmp_path)
    proc = govedge_flash(tmp_path, board)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"govedge flash: {DEVICE} is on the board but not running: bad config" in proc.stderr
    assert "[config] config: interval_s must be a positive number of seconds, not 0" in proc.stderr

    # the config fixed but its broker wrong: only config.json and main.py (last) are written again
    configure(tmp_path, interval_s=0.5, mqtt_port=free_port())
    proc = govedge_flash(tmp_path, board)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "upload    2 files written" in proc.stdout
    assert "is on the board but not running: broker unreachable" in proc.stderr
    assert re.search(r"uplink: broker 127\.0\.0\.1:\d+ unreachable", proc.stderr)

    # the broker right, the BME280 unplugged from the board
    configure(tmp_path, mqtt_port=broker.port)
    (board.root / "sim.json").write_text(json.dumps({"bme280_unplugged": True}))
    proc = govedge_flash(tmp_path, board)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is on the board but not running: sensor bme280 missing (no answer on its bus)" in proc.stderr


def test_micropython_images_are_checked_before_the_board_is_touched(tmp_path):
    provisioned(tmp_path, 1883)
    provision("picow-0001", "picow", ["bme280"], tmp_path / "registry.json", tmp_path / "devices")
    not_an_image = tmp_path / "firmware.bin"
    not_an_image.write_bytes(b"UF2\n" + bytes(508))
    port = str(tmp_path / "no-such-port")

    def flash(device_id: str, image: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "flash", device_id, "--port", port,
                               "--devices", str(tmp_path / "devices"), "--registry", str(tmp_path / "registry.json"),
                               "--micropython", str(image)], capture_output=True, text=True, timeout=60)

    proc = flash(DEVICE, not_an_image)  # a sim board is not of the ESP32 family
    assert proc.returncode == 2 and "--micropython is for ESP32-family boards" in proc.stderr

    configure(tmp_path, board="esp32")
    proc = flash(DEVICE, not_an_image)
    assert proc.returncode == 2 and "is not an ESP32 firmware image" in proc.stderr

    proc = flash("picow-0001", not_an_image)
    assert proc.returncode == 2
    assert "hold its BOOTSEL button" in proc.stderr and "RPI-RP2" in proc.stderr
