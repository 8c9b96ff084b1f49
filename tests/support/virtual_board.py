"""A MicroPython board on a pseudo-terminal, for `govedge flash` and `govedge monitor`.

Only the USB serial line and the chip are simulated. The line is a pty whose
slave end is named by a symlink, as udev names a USB serial adapter under
/dev/serial/by-id/: unplugged, the name goes away; plugged in again, it points
at a new tty. The chip's side of the line speaks MicroPython's REPL protocol
as MicroPython's docs/reference/repl.rst ("Raw mode and raw-paste mode") and
its pyexec describe it: the friendly REPL, Ctrl-A raw REPL, Ctrl-D execute
with "OK", output, 0x04, error, 0x04, ">", raw-paste mode with its flow-control
window, Ctrl-B, Ctrl-C, and soft reset, which runs main.py in the friendly REPL.

What the chip runs is the real MicroPython unix port: one interpreter process
per boot, its current directory the board's folder (the board's filesystem),
so that `open`, `os` and `hashlib` act on that folder as they act on a board's
flash. The simulated sensor chips (govedge.tools.dev.sim) are on its path, as frozen
modules are on a board's. A small executor in MicroPython takes each program
the REPL received and runs it in one persistent namespace, as pyexec does.

The board can be told to lose its USB line after N bytes from the host: the
line drops, the board loses power (its interpreter is killed, its folder keeps
what was written), and after a moment it is plugged in again and boots.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import struct
import subprocess
import threading
import time
import tty
from pathlib import Path

from govedge.tools.field import firmware
from govedge.tools.dev import sim

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
WINDOW = 128  # raw-paste flow-control window increment, as in the protocol's example

# The chip's executor: reads "KIND LENGTH\n" + program from its stdin and runs it in one namespace.
# KIND: x a raw-REPL program, s one friendly-REPL line (values echoed), f a file to run (main.py).
# After each: output, 0x04, the uncaught exception if any, 0x04 -- the raw REPL's framing.
EXECUTOR = r"""
import sys
_g = {"__name__": "__main__"}
_in = sys.stdin.buffer
_out = sys.stdout


def _read(n):
    b = b""
    while len(b) < n:
        c = _in.read(n - len(b))
        if not c:
            raise SystemExit
        b += c
    return b


while True:
    try:
        _head = _in.readline()
        if not _head:
            break
        _kind, _n = _head.split()
        _src = _read(int(_n)).decode()
    except KeyboardInterrupt:  # Ctrl-C at an idle REPL
        continue
    try:
        if _kind == b"f":
            with open(_src) as _f:
                _code = compile(_f.read(), _src, "exec")
        else:
            _code = compile(_src, "<stdin>", "single" if _kind == b"s" else "exec")
        exec(_code, _g)
        _out.write("\x04\x04")
    except BaseException as _e:
        _out.write("\x04")
        sys.print_exception(_e, _out)
        _out.write("\x04")
"""


class _Interpreter:
    """The chip: one MicroPython unix port process, from a boot to the next."""

    def __init__(self, root: Path):
        cmd, env = firmware.micropython_command(["-c", EXECUTOR], [sim.DIR])
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.fd = self.proc.stdout.fileno()

    def run(self, kind: bytes, program: bytes) -> None:
        try:
            self.proc.stdin.write(kind + b" %d\n" % len(program) + program)
            self.proc.stdin.flush()
        except OSError:
            pass  # it died; its output's end tells the REPL

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the unix port raises KeyboardInterrupt

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class VirtualBoard:
    """A board on a USB serial line; `port` is the path a host opens, `root` its filesystem."""

    def __init__(self, root: Path, port: Path, cut_after: int | None = None, replug_s: float = 0.3):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = str(port)
        Path(self.port).parent.mkdir(parents=True, exist_ok=True)
        self.cut_after = cut_after  # bytes from the host after which the line drops (once)
        self.replug_s = replug_s
        self.received = 0  # bytes from the host since power-on of this object
        self.cuts: list[dict[str, bytes]] = []  # the filesystem as each cut left it
        self.output = bytearray()  # everything the board sent
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.line: tuple[int, int] | None = None  # (master, slave) while plugged in
        self.interp: _Interpreter | None = None
        self.mode = "friendly"  # or "raw"; raw-paste is "paste"
        self.busy: str | None = None  # what runs: "x" raw program, "s" friendly line, "f" main.py
        self.eofs = 0  # 0x04s seen of the running program's framing
        self.pending = bytearray()  # host bytes not yet taken by the REPL
        self.text = bytearray()  # the REPL's current line or raw program
        self.window = 0
        self.last_out = 0
        self.running = True
        self._plug()
        self._boot(soft=False)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- the test's hands on the board -------------------------------------------------

    def reset(self) -> None:
        """The reset button: the chip restarts, the USB serial adapter stays."""
        with self.lock:
            self.requests.append("reset")

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        if self.interp:
            self.interp.kill()
        self._unplug()

    def files(self) -> dict[str, bytes]:
        """The board's filesystem: path relative to its root -> content."""
        return {p.relative_to(self.root).as_posix(): p.read_bytes()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    @property
    def log(self) -> str:
        return self.output.decode("utf-8", "replace")

    # -- the USB line ------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as they are
        os.set_blocking(master, False)
        tmp = self.port + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)
        self.line = (master, slave)

    def _unplug(self) -> None:
        if os.path.lexists(self.port):
            os.unlink(self.port)
        if self.line:
            for fd in self.line:
                os.close(fd)
            self.line = None

    def _send(self, data: bytes) -> None:
        self.output += data
        if not self.line:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.line[0], view)
                view = view[n:]
            except BlockingIOError:
                # nobody reads: a board's USB serial drops what the host does not take
                if not select.select([], [self.line[0]], [], 0.2)[1]:
                    return

    def _cooked(self, data: bytes) -> bytes:
        # a board's stdout turns "\n" into "\r\n"
        out = bytearray()
        for b in data:
            if b == 0x0A and self.last_out != 0x0D:
                out.append(0x0D)
            out.append(b)
            self.last_out = b
        return bytes(out)

    # -- the chip ----------------------------------------------------------------------

    def _boot(self, soft: bool) -> None:
        if self.interp:
            self.interp.kill()
        self.busy = None
        self.text.clear()
        if soft:
            self._send(b"MPY: soft reboot\r\n")
        else:
            self.mode = "friendly"  # a power-on or reset starts in the friendly REPL
            self.pending.clear()
        self.interp = _Interpreter(self.root)
        if self.mode == "raw":
            self._send(RAW_BANNER + b">")
        elif (self.root / "main.py").is_file():
            self._execute(b"f", b"main.py")
        else:
            self._friendly_prompt(banner=True)

    def _friendly_prompt(self, banner: bool = False) -> None:
        if banner:
            self._send(b"MicroPython (unix port) on a virtual board\r\nType \"help()\" for more information.\r\n")
        self._send(b">>> ")

    def _execute(self, kind: bytes, program: bytes) -> None:
        if self.interp.proc.poll() is not None:
            self.interp.kill()
            self.interp = _Interpreter(self.root)
        self.busy = kind.decode()
        self.eofs = 0
        self.interp.run(kind, program)

    def _power_loss(self) -> None:
        """The USB cable is pulled: line and power gone, the flash keeps what was written."""
        if self.interp:
            self.interp.kill()
            self.interp = None
        self.cuts.append(self.files())
        self.pending.clear()
        self._unplug()
        time.sleep(self.replug_s)
        self._plug()
        self._boot(soft=False)

    # -- the REPL ------------------------------------------------------------------------

    def _run(self) -> None:
        while self.running:
            with self.lock:
                requests, self.requests = self.requests, []
            for r in requests:
                if r == "reset":
                    self._boot(soft=False)
            fds = ([self.line[0]] if self.line else []) + ([self.interp.fd] if self.interp and self.busy else [])
            ready, _, _ = select.select(fds, [], [], 0.05)
            if self.interp and self.busy and self.interp.fd in ready:
                self._from_chip(os.read(self.interp.fd, 4096))
            if self.line and self.line[0] in ready:
                try:
                    data = os.read(self.line[0], 4096)
                except OSError:  # the host closed its end; the line waits for the next one
                    data = b""
                self._from_host(data)
            self._take()

    def _from_host(self, data: bytes) -> None:
        if self.cut_after is not None and self.received + len(data) >= self.cut_after:
            keep = self.cut_after - self.received
            self.received += keep
            self.cut_after = None
            self.pending += data[:keep]
            self._take()
            self._power_loss()
            return
        self.received += len(data)
        self.pending += data

    def _from_chip(self, data: bytes) -> None:
        if not data:  # the interpreter died (killed, out of memory): what it ran ends unfinished
            data = b"\x04" * (2 - self.eofs)
            self.interp.kill()
            self.interp = None
        if self.busy == "x":  # raw REPL: the framing goes to the host as it is
            self._send(self._cooked(data))
            self.eofs += data.count(b"\x04")
            if self.eofs >= 2:
                self.busy = None
                self._send(b">")
        else:
            self.eofs += data.count(b"\x04")
            self._send(self._cooked(data.replace(b"\x04", b"")))
            if self.eofs >= 2:
                after_main = self.busy == "f"
                self.busy = None
                self._friendly_prompt(banner=after_main)
        if self.interp is None and self.running:
            self.interp = _Interpreter(self.root)

    def _take(self) -> None:
        """Hand pending host bytes to the REPL; while a program runs only Ctrl-C gets through."""
        while self.pending:
            if self.busy:
                # the rest waits in the board's input buffer until the REPL reads it again
                i = self.pending.find(b"\x03")
                if i >= 0:
                    del self.pending[i]
                    self.interp.interrupt()
                return
            c = self.pending[0]
            del self.pending[0]
            if self.mode == "paste":
                self._paste(c)
            elif self.mode == "raw":
                self._raw(c)
            else:
                self._friendly(c)

    def _friendly(self, c: int) -> None:
        if c == 0x01:  # Ctrl-A: raw REPL
            self.text.clear()
            self.mode = "raw"
            self._send(b"\r\n" + RAW_BANNER + b">")
        elif c == 0x02:  # Ctrl-B: the friendly REPL again
            self.text.clear()
            self._send(b"\r\n")
            self._friendly_prompt(banner=True)
        elif c == 0x03:  # Ctrl-C: drop the line
            self.text.clear()
            self._send(b"\r\n")
            self._friendly_prompt()
        elif c == 0x04:  # Ctrl-D on an empty line: soft reset
            if not self.text:
                self._send(b"\r\n")
                self._boot(soft=True)
        elif c in (0x0D, 0x0A):
            self._send(b"\r\n")
            line, self.text = bytes(self.text), bytearray()
            if line.strip():
                self._execute(b"s", line)
            else:
                self._friendly_prompt()
        elif c in (0x08, 0x7F):
            if self.text:
                self.text.pop()
                self._send(b"\x08 \x08")
        elif c >= 0x20:
            self.text.append(c)
            self._send(bytes([c]))

    def _raw(self, c: int) -> None:
        if c == 0x01:  # Ctrl-A: raw-paste request when it follows Ctrl-E "A", else a fresh raw REPL
            if bytes(self.text) == b"\x05A":
                self.text.clear()
                self.mode = "paste"
                self.window = WINDOW
                self._send(b"R\x01" + struct.pack("<H", WINDOW) + b"\x01")
            else:
                self.text.clear()
                self._send(RAW_BANNER + b">")
        elif c == 0x02:  # Ctrl-B: friendly REPL
            self.text.clear()
            self.mode = "friendly"
            self._send(b"\r\n")
            self._friendly_prompt(banner=True)
        elif c == 0x03:  # Ctrl-C: clear the program received so far
            self.text.clear()
        elif c == 0x04:  # Ctrl-D: run it, or a soft reset when there is nothing
            self._send(b"OK")
            program, self.text = bytes(self.text), bytearray()
            if program:
                self._execute(b"x", program)
            else:
                self._send(b"\r\n")
                self._boot(soft=True)
        else:
            self.text.append(c)

    def _paste(self, c: int) -> None:
        if c == 0x04:  # end of data: acknowledged, then compiled and run
            self.mode = "raw"
            self._send(b"\x04")
            program, self.text = bytes(self.text), bytearray()
            self._execute(b"x", program)
        elif c == 0x03:  # Ctrl-C: the reader stops and raises KeyboardInterrupt
            self.mode = "raw"
            self.text.clear()
            self._send(b"\x04\x04KeyboardInterrupt: \r\n\x04>")
        else:
            self.text.append(c)
            self.window -= 1
            if self.window == 0:  # the host may send another window
                self.window = WINDOW
                self._send(b"\x01")
