"""`govedge flash`: a provisioned device onto its board, running.

flash, step by step (docs/NODE.md, "Flashing a board"):
 1. with --micropython IMAGE.bin, MicroPython onto a blank ESP32-family board (esptool's
    Python API); for the Pico W, the UF2 copy steps instead;
 2. the firmware compiled to .mpy with mpy-cross (govedge.tools.field.firmware.build, umqtt.simple
    included), the device's config.json and device.key (and ca.der) from provisioning's folder;
 3. through mpremote's serial transport (the raw REPL): every file goes to NAME.part, its
    SHA-256 is read back from the board and compared, and only then is it renamed into place.
    main.py leaves the board before anything else is written and comes back last, so a board
    cut off halfway boots to its REPL, never into half a firmware. A line that breaks is
    reconnected and the upload resumed; files already in place are recognised by their hash;
 4. every file's SHA-256 read back once more; a soft reset; the node's log followed until its
    first signed message is delivered ("uplink: first message delivered"), or until its first
    error line, named in plain words (the node's words are in govedge.tools.field.monitor,
    which also holds `govedge monitor`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from govedge.tools.field import firmware
# the node's log, read by follow() below
from govedge.tools.field.monitor import PROMPT, SOFT_REBOOT, TRACEBACK, judge, port_problem
from govedge.core import topics, wire
from govedge.core.errors import GovedgeError

PART = ".part"  # a file on its way; renamed to its name once its SHA-256 is right
ATTEMPTS = 3
CONNECT_WAIT_S = 3.0
RECONNECT_WAIT_S = 15.0  # a board's USB serial comes back within seconds after a reset
LINE_TIMEOUT_S = 10  # a board that does not answer for this long is taken as cut off
FOLLOW_TIMEOUT_S = 90.0  # Wi-Fi, NTP, sensors and the broker, on the first boot
ESP_IMAGE_MAGIC = 0xE9  # the first byte of an ESP firmware image (the bootloader's header)


class FlashError(GovedgeError, RuntimeError):
    """Why the board is not running the node, in words a technician can act on."""

    code = "flash"


class NodeFailed(FlashError):
    """The node started and reported an error: what it means, and its own line."""

    code = "node_failed"

    def __init__(self, what: str, line: str):
        self.what = what
        self.line = line
        super().__init__(f"{what}; the node's line: {line}")


class _LineBroke(Exception):
    """The serial line failed (unplugged, reset, timeout, damaged bytes): reconnect and go on."""


@dataclass(frozen=True)
class BoardFile:
    name: str  # its path on the board, from the board's root
    data: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()


# -- what goes onto the board ----------------------------------------------------------------


def device_files(device_id: str, devices: Path) -> tuple[dict, list[BoardFile]]:
    """The device's config (parsed) and its files from provisioning's folder. Every file config.json
    names stays inside that folder: a config that names /home/... or ../.. uploads nothing."""
    if not isinstance(device_id, str) or not wire.DEVICE_ID.fullmatch(device_id):
        raise FlashError(f"{device_id!r} is not a device id (letters, digits, '.', '-', '_', as the registry has them)")
    folder = Path(devices) / device_id
    if not folder.is_dir():
        raise FlashError(f"no folder {folder}: provision the device first (govedge provision {device_id} "
                         "--board ...) or name provisioning's folder with --devices")
    path = folder / "config.json"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlashError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise FlashError(f"{path} is not valid JSON ({exc}); provision the device again") from None
    if not isinstance(cfg, dict) or cfg.get("device_id") != device_id:
        raise FlashError(f"{path} is not the config of {device_id}: its device_id is "
                         f"{cfg.get('device_id') if isinstance(cfg, dict) else None!r} (provision {device_id} "
                         "again, or flash the device it names)")
    mqtt = cfg.get("mqtt") or {}
    if not isinstance(mqtt, dict):
        raise FlashError(f"{path}: mqtt is not a table; provision the device again")
    for key, expected in (("client_id", device_id), ("topic", topics.reading(device_id)),
                          ("status_topic", topics.status(device_id))):
        if key in mqtt and mqtt[key] != expected:
            raise FlashError(f"{path}: mqtt.{key} is {mqtt[key]!r}, not {device_id}'s {expected!r}: the node would "
                             "speak as another device (provision it again)")
    files = [BoardFile("config.json", raw)]
    key_file, key_path = _inside(folder, path, "key_file", cfg.get("key_file", "device.key"))
    try:
        files.append(BoardFile(key_file, key_path.read_bytes()))
    except OSError as exc:
        raise FlashError(f"cannot read the device's key {key_path}: {exc.strerror}") from None
    ca, ca_path = _inside(folder, path, "mqtt.ca", mqtt.get("ca", "ca.der"))
    if ca_path.is_file():
        files.append(BoardFile(ca, ca_path.read_bytes()))
    elif mqtt.get("tls"):
        raise FlashError(f"{path} asks for TLS but {ca_path} is missing "
                         f"(govedge provision {device_id} --rotate --tls --ca CA.pem puts it there)")
    return cfg, files


def _inside(folder: Path, config: Path, key: str, name) -> tuple[str, Path]:
    """A file config.json names (``key``): its name on the board and its path, which must stay inside the
    device's folder (no absolute path, no '..', no link out of it)."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise FlashError(f"{config}: {key} must name a file in {folder}, not {name!r}")
    relative = PurePosixPath(name)
    target = (folder / name).resolve()
    if relative.is_absolute() or ".." in relative.parts or not target.is_relative_to(folder.resolve()):
        raise FlashError(f"{config}: {key} = {name!r} is outside the device's folder {folder}; a device's "
                         "files are named relative to it (provision the device again)")
    return relative.as_posix(), target


def check_key(device_id: str, key: BoardFile, registry_path: Path) -> str:
    """The key must be the device's active key in the registry: else its readings are refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from govedge.core.registry import Registry, RegistryError

    if not Path(registry_path).exists():
        return f"{registry_path} not found: the key was not checked against the registry"
    try:
        registry = Registry.load(registry_path)
    except RegistryError as exc:
        raise FlashError(str(exc)) from None
    device = registry.devices.get(device_id)
    if device is None:
        raise FlashError(f"device {device_id!r} is not in the registry {registry_path}: "
                         "the gateway would refuse its readings")
    try:
        scalar = int(key.data.strip(), 16)
        private = ec.derive_private_key(scalar, ec.SECP256R1())
    except ValueError:
        raise FlashError(f"{key.name} of {device_id} does not hold a P-256 private key") from None
    public = private.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint).hex()
    if public != device.active_key.public_key:
        retired = any(k.public_key == public for k in device.keys)
        raise FlashError(f"{key.name} of {device_id} is {'a retired key' if retired else 'not its key'} in "
                         f"{registry_path}: the gateway would refuse its readings (provision it again, or "
                         "use the folder of its last provisioning)")
    return f"the device's active key in {registry_path}"


def firmware_files(board: str, workdir: Path) -> list[BoardFile]:
    try:
        paths = firmware.build(Path(workdir), board=board)
    except firmware.FirmwareToolError as exc:
        raise FlashError(str(exc)) from None
    return [BoardFile(p.relative_to(workdir).as_posix(), p.read_bytes()) for p in paths]


def upload_order(fw: list[BoardFile], device: list[BoardFile]) -> list[BoardFile]:
    """Firmware modules, the device's files, and main.py last: nothing boots before all is there."""
    main = [f for f in fw if f.name == "main.py"]
    if len(main) != 1:
        raise FlashError("the firmware build has no main.py")
    return [f for f in fw if f.name != "main.py"] + device + main


# -- progress ----------------------------------------------------------------------------------


class Progress:
    """A plain text progress bar on stderr; one line per tenth when stderr is not a terminal."""

    def __init__(self, total: int, stream=None):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.shown = -1

    def update(self, done: int, name: str) -> None:
        self.done = done
        pct = min(100, 100 * done // self.total)
        if self.tty:
            bar = "#" * (pct * 30 // 100)
            self.stream.write(f"\r  upload    [{bar:<30}] {pct:3d}%  {done / 1024:6.1f} of "
                              f"{self.total / 1024:.1f} KiB  {name:<24.24}")
            self.stream.flush()
        elif pct // 10 != self.shown // 10:
            self.stream.write(f"  upload    {pct:3d}%  {done / 1024:.1f} of {self.total / 1024:.1f} KiB\n")
            self.stream.flush()
        self.shown = pct

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- the serial line -----------------------------------------------------------------------------


def _line_errors() -> tuple[type[BaseException], ...]:
    import struct

    import serial
    from mpremote.transport import TransportError

    # everything a broken or noisy line raises; TransportExecError (the board's own Python error)
    # is a TransportError too and is told apart where it matters
    return (serial.SerialException, OSError, TransportError, struct.error, ValueError, SyntaxError, EOFError)


_BOARD_FS_ERRORS = {28: "its filesystem is full", 30: "its filesystem is read-only", 13: "permission denied"}


class Board:
    """One connection to a MicroPython board through mpremote's serial transport (raw REPL)."""

    def __init__(self, port: str, baud: int):
        self.port = port
        self.baud = baud
        self.transport = None
        self.doing = "connecting"

    def connect(self, wait_s: float) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        deadline = time.monotonic() + wait_s
        while True:
            said = io.StringIO()
            try:
                with contextlib.redirect_stdout(said):  # mpremote prints what it got when it fails
                    self.transport = SerialTransport(self.port, baudrate=self.baud, timeout=LINE_TIMEOUT_S)
                    self.transport.enter_raw_repl(soft_reset=True)
                return
            except (TransportError, OSError) as exc:
                opened = self.transport is not None
                self.close()
                if time.monotonic() >= deadline:
                    if not opened:
                        raise FlashError(port_problem(self.port)) from None
                    got = said.getvalue().strip()
                    raise FlashError(
                        f"no MicroPython REPL answers on {self.port} ({exc}"
                        f"{'; it sent ' + got[-80:] if got else ''}): a blank ESP32 board needs "
                        "--micropython IMAGE.bin first, a Pico W the UF2 steps (docs/NODE.md)") from None
                time.sleep(0.3)

    def close(self) -> None:
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:  # a line that is gone cannot be closed cleanly
                pass
        self.transport = None

    def describe(self) -> tuple[str, int]:
        """('MicroPython 1.24.1 on esp32', .mpy version) of the board's interpreter."""
        t = self.transport
        t.exec("import sys")
        name, version, mpy, platform = t.eval(
            "(sys.implementation.name, '.'.join(str(v) for v in sys.implementation.version[:3]),"
            " getattr(sys.implementation, '_mpy', 0), sys.platform)")
        if name != "micropython":
            raise FlashError(f"the board on {self.port} runs {name}, not MicroPython")
        return f"MicroPython {version} on {platform}", mpy & 0xFF

    def sha256(self, name: str) -> bytes | None:
        """The SHA-256 of a file on the board, computed there; None when it is not there."""
        try:
            return self.transport.fs_hashfile(name, "sha256")
        except OSError as exc:
            if exc.errno == 2:  # ENOENT
                return None
            raise

    def run(self, code: str) -> None:
        from mpremote.transport import TransportExecError

        try:
            self.transport.exec(code)
        except TransportExecError as exc:
            raise FlashError(f"the board failed while {self.doing}: {exc.error_output.strip().splitlines()[-1]}") \
                from None

    def ensure_folder(self, name: str) -> None:
        folder = name.rpartition("/")[0]
        if folder and not self.transport.fs_isdir(folder):
            self.transport.fs_mkdir(folder)

    def parts(self, folders: set[str]) -> list[str]:
        """Files left half-written by an earlier, cut-off upload."""
        found = []
        for folder in sorted(folders):
            try:
                entries = self.transport.fs_listdir(folder)
            except OSError:
                continue
            found += [f"{folder}/{e.name}" if folder else e.name for e in entries if e.name.endswith(PART)]
        return found


def _upload(board: Board, files: list[BoardFile]) -> tuple[int, int]:
    """One attempt: every file into place, main.py last; returns (files written, files kept)."""
    t = board.transport
    by_name = {f.name: f for f in files}
    board.doing = "reading the files' SHA-256 from the board"
    on_board = {f.name: board.sha256(f.name) for f in files}
    needed = [f for f in files if on_board[f.name] != f.sha256]
    if not needed:
        return 0, len(files)
    folders = {f.name.rpartition("/")[0] for f in files}
    for stale in board.parts(folders):
        board.doing = f"removing {stale}"
        t.fs_rmfile(stale)
    if on_board["main.py"] is not None:
        # the node leaves first: a board cut off from here on boots to its REPL, not into a mix
        board.doing = "taking main.py off the board"
        t.fs_rmfile("main.py")
        if by_name["main.py"] not in needed:
            needed.append(by_name["main.py"])
    progress = Progress(sum(len(f.data) for f in needed))
    sent = 0
    try:
        for f in needed:
            tmp = f.name + PART
            board.doing = f"writing {f.name}"
            board.ensure_folder(f.name)
            t.fs_writefile(tmp, f.data, progress_callback=lambda done, total, name=f.name: progress.update(
                sent + done, name))
            board.doing = f"reading back the SHA-256 of {f.name}"
            got = board.sha256(tmp)
            if got != f.sha256:
                raise _LineBroke(f"{f.name} arrived damaged (SHA-256 on the board "
                                 f"{got.hex()[:16] if got else 'none'}..., sent {f.sha256.hex()[:16]}...)")
            board.doing = f"renaming {tmp} to {f.name}"
            board.run(f"import os\nos.rename({tmp!r}, {f.name!r})")
            sent += len(f.data)
            progress.update(sent, f.name)
    finally:
        progress.end()
    return len(needed), len(files) - len(needed)


def upload(port: str, baud: int, files: list[BoardFile], say, wait_s: float = CONNECT_WAIT_S,
           mpy_version: int | None = None) -> Board:
    """Every file onto the board with retries; returns the connected board, raw REPL."""
    import serial
    from mpremote.transport import TransportExecError

    line_errors = _line_errors()
    board = Board(port, baud)
    described = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if attempt == 1:
                board.connect(wait_s)
            else:
                try:
                    board.connect(RECONNECT_WAIT_S)
                except FlashError as exc:
                    raise FlashError(f"the line broke while {board.doing} and the board did not come back "
                                     f"within {RECONNECT_WAIT_S:g} s: {exc}") from None
            if not described:
                what, board_mpy = board.describe()
                described = True
                say(f"  board     {what}, raw REPL on {port}")
                if mpy_version and board_mpy and board_mpy != mpy_version:
                    raise FlashError(f"the board's MicroPython loads .mpy version {board_mpy}, the firmware is "
                                     f"compiled for version {mpy_version}: put a current MicroPython on the "
                                     "board (--micropython IMAGE.bin, or the UF2 steps on a Pico W)")
            written, kept = _upload(board, files)
            board.doing = "reading back every file's SHA-256"
            for f in files:
                if board.sha256(f.name) != f.sha256:
                    raise _LineBroke(f"{f.name} on the board does not match after the upload")
            say(f"  upload    {written} files written, {kept} already in place")
            say(f"  verified  {len(files)} files, each by its SHA-256 read back from the board")
            return board
        except FlashError:
            board.close()
            raise
        except TransportExecError as exc:
            board.close()
            raise FlashError(f"the board failed while {board.doing}: "
                             f"{exc.error_output.strip().splitlines()[-1]}") from None
        except (_LineBroke, *line_errors) as exc:
            board.close()
            errno = getattr(exc, "errno", None)
            if errno in _BOARD_FS_ERRORS and isinstance(exc, OSError) and not isinstance(exc, serial.SerialException):
                raise FlashError(f"the board refused while {board.doing}: {_BOARD_FS_ERRORS[errno]}") from None
            if attempt == ATTEMPTS:
                raise FlashError(f"the line to the board broke while {board.doing} ({exc or type(exc).__name__}), "
                                 f"{ATTEMPTS} times: check the cable and the port, then run govedge flash "
                                 "again (files already in place are kept)") from None
            say(f"  line      broke while {board.doing} ({exc or type(exc).__name__}); reconnecting "
                f"(attempt {attempt + 1} of {ATTEMPTS})")
    raise AssertionError("unreachable")


# -- the node's first boot --------------------------------------------------------------------------

def follow(board: Board, cfg: dict, say, timeout: float = FOLLOW_TIMEOUT_S) -> str:
    """Soft-reset the board and read the node's log until it has published, or says why not.

    A node logs its connection to the broker, a line for every failed send, and, once per
    boot, "uplink: first message delivered (#N)" when the broker (QoS 1) or, wired, the
    gateway has acknowledged its first message.
    """
    t = board.transport
    ser = t.serial
    board.doing = "resetting the board"
    t.exit_raw_repl()  # Ctrl-B: the friendly REPL, where a soft reset runs main.py
    ser.write(b"\x04")  # Ctrl-D: soft reset
    ser.timeout = 0.2
    say("  reset     soft reset; the node's log:")
    wired = cfg.get("transport") == "serial"
    booted = False
    where = "the gateway's serial line" if wired else ""
    last = ""
    in_traceback = False
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise FlashError(f"no reading published within {timeout:g} s; the node's last line: "
                             f"{last or '(nothing)'}")
        buf += ser.read(256)
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not booted:
                booted = SOFT_REBOOT in line  # what came before is the REPL's
                continue
            if not line.strip():
                continue
            say(f"    {line}")
            last = line
            if in_traceback:
                if not line.startswith((" ", "\t")):  # the exception itself, after the frames
                    raise NodeFailed("the firmware stopped with an error", line)
                continue
            if line.startswith(TRACEBACK):
                in_traceback = True
                continue
            verdict = judge(line)
            if verdict is None:
                continue
            kind, what = verdict
            if kind == "error":
                raise NodeFailed(what, line)
            if kind == "connected":
                where = f"its broker {what}"
            if kind == "delivered":
                return f"first signed message {what} delivered over {where or 'its link'}"
        if booted and buf.endswith(PROMPT):
            raise FlashError(f"main.py ended and the board is back at its REPL; the node's last line: "
                             f"{last or '(nothing)'}")


# -- MicroPython onto a blank board ---------------------------------------------------------------

PICOW_STEPS = """\
The Pico W gets MicroPython by copying a file onto it, not through its serial port:
  1. unplug the Pico W, hold its BOOTSEL button down and plug it in again; let go
  2. a drive named RPI-RP2 appears: copy {image} onto it
  3. the Pico W restarts into MicroPython by itself (the drive goes away)
Then run govedge flash {device_id} --port PORT again, without --micropython."""


def check_image(image: Path, board: str) -> None:
    """--micropython's argument, checked before anything touches the board."""
    if board not in ("esp32", "picow"):
        raise FlashError(f"--micropython is for ESP32-family boards (and explains the UF2 steps for the Pico W); "
                         f"this device's board is {board!r}")
    if not image.is_file():
        raise FlashError(f"no MicroPython image {image}")
    head = image.read_bytes()[:512]
    if board == "picow":
        if not head.startswith(b"UF2\n"):
            raise FlashError(f"{image} is not a UF2 file: the Pico W takes MicroPython's .uf2 image")
    elif not head or head[0] != ESP_IMAGE_MAGIC:
        raise FlashError(f"{image} is not an ESP32 firmware image (its first byte is not 0x{ESP_IMAGE_MAGIC:02X}; "
                         "take MicroPython's firmware .bin for the board's chip)")


def write_micropython(port: str, image: Path, say) -> str:
    """Erase an ESP32-family chip and write a MicroPython image with esptool; returns the chip's name."""
    import serial
    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    try:
        with detect_chip(port) as esp:
            chip = esp.CHIP_NAME
            if not chip.startswith("ESP32"):
                raise FlashError(f"the chip on {port} is an {chip}, not of the ESP32 family")
            # MicroPython's ESP32 images start with the bootloader, at the chip's bootloader offset:
            # 0x1000 on the ESP32, 0x0 on the ESP32-S3 and -C3 (esptool's targets; micropython.org's
            # download page gives the same offsets for its firmware .bin)
            offset = esp.BOOTLOADER_FLASH_OFFSET
            say(f"  chip      {chip}: erasing the flash, then {image.name} at 0x{offset:X}")
            esp = run_stub(esp)
            attach_flash(esp)
            erase_flash(esp)
            write_flash(esp, [(offset, str(image))])
            reset_chip(esp, "hard-reset")
    except FatalError as exc:
        raise FlashError(f"esptool could not write MicroPython on {port}: {exc}") from None
    except serial.SerialException as exc:
        raise FlashError(f"esptool lost {port}: {exc}") from None
    return chip


# -- govedge flash -----------------------------------------------------------------------------------


def flash(device_id: str, port: str, devices: Path = Path("devices"), registry: Path = Path("registry.json"),
          baud: int = 115200, micropython: Path | None = None, timeout: float = FOLLOW_TIMEOUT_S,
          say=None) -> str:
    """Take a provisioned device to a running node on the board at port; returns what the node did."""
    say = say or (lambda text: print(text, flush=True))
    cfg, device = device_files(device_id, devices)
    board_type = cfg.get("board")
    if board_type == "rpi":
        raise FlashError(f"{device_id} is a Raspberry Pi node: it runs the firmware under CPython from its "
                         "own disk, there is no MicroPython board to flash")
    if micropython is not None:
        check_image(Path(micropython), board_type)
        if board_type == "picow":
            raise FlashError(PICOW_STEPS.format(image=micropython, device_id=device_id))
    checked = check_key(device_id, device[1], registry)
    say(f"flashing {device_id} ({board_type}) on {port}")
    say(f"  key       {checked}")
    wait_s = CONNECT_WAIT_S
    if micropython is not None:
        write_micropython(port, Path(micropython), say)
        wait_s = RECONNECT_WAIT_S  # the first boot formats the filesystem
    with tempfile.TemporaryDirectory(prefix="govedge-flash-") as tmp:
        fw = firmware_files(board_type, Path(tmp))
    mpy = next((f.data[1] for f in fw if f.name.endswith(".mpy") and f.data[:1] == b"M"), None)
    files = upload_order(fw, device)
    say(f"  firmware  {len(fw)} files (.mpy from mpy-cross, umqtt.simple {firmware.UMQTT_SIMPLE['version']}); "
        f"device files {', '.join(f.name for f in device)}")
    board = upload(port, baud, files, say, wait_s=wait_s, mpy_version=mpy)
    try:
        return follow(board, cfg, say, timeout=timeout)
    except _line_errors() as exc:
        raise FlashError(f"the line to the board broke while following its log ({exc}); the files are in "
                         f"place: govedge monitor --port {port} shows the node's log") from None
    finally:
        board.close()
