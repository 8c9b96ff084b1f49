"""A throwaway copy of this machine with systemd as its PID 1: what a fresh Debian host does with a
package and with `systemctl enable --now`, without touching the machine the tests run on.

The copy is this machine's root as the lower layer of an overlay whose upper layer is a tmpfs, in a
mount and PID namespace of its own (unshare); /dev and /sys are the machine's, /proc and /run its own.
Its systemd boots into an empty target, so nothing starts but what a test starts; the network is the
machine's (a service listens on the loopback ports the test chose). Everything written in it, and every
process started in it, is gone when its systemd is killed (``close``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

TARGET = "govedge-test.target"
# the empty target, and the overlay root it boots in; $1 is a folder of the tests' own, mounted over by
# a tmpfs in the namespace (an overlay's upper layer cannot lie inside its lower one)
BOOT = f"""set -e
mount -t tmpfs -o mode=0755 throwaway "$1"
mkdir "$1/upper" "$1/work" "$1/root"
mkdir -p "$1/upper/etc/systemd/system"
printf '[Unit]\\nDescription=nothing but what a test starts\\n' > "$1/upper/etc/systemd/system/{TARGET}"
mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$1/root"
mount --rbind /dev "$1/root/dev"
mount --rbind /sys "$1/root/sys"
mount -t proc proc "$1/root/proc"
mount -t tmpfs -o mode=0755 run "$1/root/run"
cd "$1/root"
exec chroot . /lib/systemd/systemd --system --unit={TARGET}
"""


def _needs() -> None:
    if os.geteuid() != 0:
        pytest.skip("a throwaway root with its own systemd needs root (namespaces, mounts)")
    for tool in ("unshare", "nsenter", "chroot"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing (Debian package util-linux / coreutils)")
    if not Path("/lib/systemd/systemd").exists():
        pytest.fail("systemd is missing (Debian package systemd)")


class ThrowawayRoot:
    def __init__(self, folder: Path):
        _needs()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["unshare", "--fork", "--pid", "--mount", "--propagation", "private",
                                      "sh", "-c", BOOT, "sh", str(folder)], start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.init = None
        deadline = time.monotonic() + 30
        while self.init is None:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the throwaway root's systemd did not start"
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if children and Path(f"/proc/{children[0]}/exe").resolve().name == "systemd":
                self.init = int(children[0])
            time.sleep(0.1)
        while self.run("systemctl", "is-system-running", check=False).stdout.strip() not in ("running", "degraded"):
            assert time.monotonic() < deadline, "the throwaway root's systemd did not finish its start"
            time.sleep(0.2)

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A command inside (as root, in its root folder, its systemd as PID 1)."""
        proc = subprocess.run(["nsenter", f"--target={self.init}", "--mount", "--pid", "--root", "--wd=/",
                               "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "HOME=/root", "LANG=C.UTF-8", *args],
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def put(self, source: Path, inside: str) -> None:
        """A file of the machine's copied to a path inside (through a pipe: the two roots are not one)."""
        proc = subprocess.run(["nsenter", f"--target={self.init}", "--mount", "--pid", "--root", "--wd=/",
                               "sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", inside],
                              stdin=open(source, "rb"), capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()

    def read(self, inside: str) -> bytes:
        proc = subprocess.run(["nsenter", f"--target={self.init}", "--mount", "--pid", "--root", "--wd=/",
                               "cat", inside], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-n", "50", "-u", unit, check=False).stdout

    def close(self) -> None:
        """Kills its systemd: the namespace's every process dies with it, its mounts and tmpfs go."""
        if self.init is not None:
            try:
                os.kill(self.init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
