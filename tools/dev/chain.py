"""A private EVM node (anvil) on a loopback port, for tests, benchmarks and the anchoring's development.

anvil comes from npm's @foundry-rs/anvil, installed with the contract's compiler in anchor/node_modules
(``npm ci --prefix anchor``; ``make test`` does it)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from govedge.tools.dev.broker import free_port
from govedge.core.errors import GovedgeError

NODE_MODULES = Path(__file__).resolve().parents[2] / "anchor" / "node_modules"


class AnvilError(GovedgeError, RuntimeError):
    code = "anvil"


def anvil_binary() -> Path:
    """The anvil binary npm installed for this machine (the optional package @foundry-rs/anvil-<os>-<cpu>).

    Run directly rather than through node_modules/.bin/anvil: that node wrapper, when
    stopped, leaves the binary behind as an orphan instead of waiting for it.
    """
    found = sorted(NODE_MODULES.glob("@foundry-rs/anvil-*/bin/anvil"))
    if not found:
        raise AnvilError(f"anvil is not installed in {NODE_MODULES}: run `npm ci --prefix anchor` "
                         "(make test does)")
    return found[0]


class Anvil:
    """A private EVM node (anvil) on a loopback port, for tests and benchmarks.

    Runs the anvil of npm's @foundry-rs/anvil in anchor/node_modules
    (``npm ci --prefix anchor``; ``make test`` does it). ``state=True`` keeps
    the chain in the work folder, so a node stopped and started again has it back,
    as a real node would.
    """

    def __init__(self, workdir: str | os.PathLike | None = None, port: int | None = None, chain_id: int = 31337,
                 state: bool = False, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="anvil-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.chain_id = chain_id
        self.state = state
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "anvil.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "Anvil":
        if self.proc and self.proc.poll() is None:
            return self
        command = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port),
                   "--chain-id", str(self.chain_id), "--silent", *self.extra_args]
        if self.state:
            command += ["--state", str(self.workdir / "anvil-state.json")]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AnvilError(f"anvil exited with {self.proc.returncode}: {self.log_path.read_text()[-500:]}")
            try:
                if self.request("eth_chainId") == hex(self.chain_id):
                    return self
            except (OSError, AnvilError):
                time.sleep(0.05)
        self.stop()
        raise AnvilError(f"anvil did not answer on {self.url} within {timeout:g} s")

    def request(self, method: str, params: list | None = None) -> Any:
        """One JSON-RPC call; the result (also for anvil's own methods such as anvil_setBalance)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise AnvilError(f"{method}: {answer['error']}")
        return answer["result"]

    def fund(self, address: str, wei: int = 10**21) -> None:
        self.request("anvil_setBalance", [address, hex(wei)])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # anvil writes its --state file on the way out
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
