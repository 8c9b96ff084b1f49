"""Device signatures checked in worker processes, for the gateway's verify stage and the hub.

Checking a P-256 signature is the largest single cost per reading and needs no
state but the registry, so it runs in a pool of worker processes (each loads
the registry once). The service hands over the payloads of a chunk of messages
and gets back, in the same order, a Reading or the (code, reason) of the
WireError for each; replay checks, storing and filtering stay in the gateway's
main loop, which takes the chunks' results in arrival order.

With ``workers = 0`` the same work runs in the main process. A worker that
dies (killed, out of memory) costs nothing: its chunk is checked again in the
main process and the pool is started afresh.

A running service reloads the registry (``Verifier.reload``; ``FileWatch`` notices
a change of its file, a rename into place included). Each chunk goes to a worker
with the registry's generation and the SHA-256 of the file the main process
loaded: a worker that holds an older one loads the file again first, once per
change, and a worker that finds other bytes there (the file changed again
meanwhile) refuses the chunk, which the main process then checks itself.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from govedge.core import wire
from govedge.core.errors import GovedgeError, internal_error, one_line
from govedge.core.registry import Registry, RegistryError

log = logging.getLogger("govedge.verify")

Result = wire.Reading | tuple[str, str]  # a verified reading, or why it is not one

_registry: Registry | None = None  # a worker process's own copy
_generation = -1  # which of the main process's registries it is (-1: not the one asked for)

START_ATTEMPTS = 3
RETRY_S = 60


class RegistryChanged(GovedgeError):
    """A worker found a registry file other than the one the main process loaded."""

    code = "registry_changed"


def _file_digest(path: str | os.PathLike) -> bytes | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).digest()
    except OSError:
        return None


def load_exactly(path: str | os.PathLike, digest: bytes | None = None) -> tuple[Registry, bytes | None]:
    """(the registry in the file, the SHA-256 of its bytes); with ``digest``: RegistryChanged unless
    the file holds those bytes before and after it is read."""
    before = _file_digest(path)
    registry = Registry.load(path)
    after = _file_digest(path)
    if before != after or (digest is not None and after != digest):
        raise RegistryChanged(f"registry {path} changed while it was being loaded")
    return registry, after


def _load(path: str, generation: int = 0, digest: bytes | None = None) -> None:
    global _registry, _generation
    try:
        _registry, _ = load_exactly(path, digest)
        _generation = generation
    except RegistryChanged:  # each chunk tries again, or goes back to the main process
        _registry, _generation = None, -1


def check_at(payloads: list[bytes], generation: int, path: str, digest: bytes | None) -> list[Result]:
    """check() in a worker, against the main process's registry of ``generation``."""
    if generation != _generation:
        _load(path, generation, digest)
        if _generation != generation:
            raise RegistryChanged(f"registry {path} is not the one the service loaded")
    return check(payloads)


def check(payloads: list[bytes], registry: Registry | None = None) -> list[Result]:
    registry = registry or _registry
    out: list[Result] = []
    for payload in payloads:
        try:
            out.append(wire.verify(payload, registry))
        except wire.WireError as exc:
            out.append((exc.code, exc.reason))
        except Exception as exc:  # noqa: BLE001 - a fault of ours on one message is that message's alone
            out.append(internal_error(exc))
    return out


def default_workers() -> int:
    """One per core, at most four (measured: docs/BENCHMARKS.md, "Gateway")."""
    return min(os.cpu_count() or 1, 4)


class Verifier:
    def __init__(self, registry_path: Path, workers: int):
        self.registry_path = Path(registry_path)
        # for the main process's own checks; the generation and digest tell the workers which one it is
        for attempt in range(3):  # a file being renamed into place just now: read it again
            try:
                self.registry, self.digest = load_exactly(self.registry_path)
                break
            except RegistryChanged:
                if attempt == 2:
                    raise
                time.sleep(0.1)
        self.generation = 0
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.retry_at = 0.0  # when the workers would not start: when to try again
        if workers:
            self._start()

    def _start(self) -> None:
        """Starts the workers; when they will not start, the gateway checks signatures itself
        and tries again after RETRY_S (a worker killed while starting is one such case)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            # spawned, not forked: the gateway has network threads running by now
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_load, initargs=(str(self.registry_path), self.generation, self.digest))
            try:
                # all workers started and loaded before the first message (the pool would otherwise
                # start them one by one as the load grows, each taking a good part of a second)
                for warm_up in [pool.submit(check, []) for _ in range(self.workers)]:
                    warm_up.result()
            except BrokenProcessPool as exc:
                pool.shutdown(wait=False, cancel_futures=True)
                log.error("verify: a worker process died while starting (%s; attempt %d of %d)",
                          exc, attempt, START_ATTEMPTS)
                continue
            self.pool = pool
            return
        self.pool = None
        self.retry_at = time.monotonic() + RETRY_S
        log.error("verify: the worker processes do not start; the gateway checks signatures itself "
                  "and tries again in %d s", RETRY_S)

    def submit(self, payloads: list[bytes]) -> Future:
        if self.pool is None and self.workers and time.monotonic() >= self.retry_at:
            self._start()
        if self.pool is None:
            done: Future = Future()
            done.set_result(check(payloads, self.registry))
            return done
        try:
            return self.pool.submit(check_at, payloads, self.generation, str(self.registry_path), self.digest)
        except BrokenProcessPool:
            done = Future()
            done.set_exception(BrokenProcessPool("verification pool is broken"))
            return done

    def result(self, payloads: list[bytes], future: Future) -> list[Result]:
        """The chunk's results; a chunk whose worker died, or whose results did not come back, is
        checked here instead (the crash guard covers this process while it does)."""
        try:
            results = future.result()
        except BrokenProcessPool:
            log.error("verify: a worker process died; checking its %d messages in the gateway and "
                      "starting the workers again", len(payloads))
            self._restart()
            return check(payloads, self.registry)
        except Exception as exc:  # noqa: BLE001 - e.g. a result that would not cross the process boundary
            log.error("verify: a chunk of %d messages came back with %s; checking it in the gateway",
                      len(payloads), internal_error(exc)[1])
            return check(payloads, self.registry)
        if len(results) != len(payloads):
            return check(payloads, self.registry)
        return results

    def reload(self) -> Registry:
        """Loads the registry file again (RegistryError, RegistryChanged: the one before stays in force).
        The chunks submitted from now on are checked against the new one; call it with none in flight."""
        registry, digest = load_exactly(self.registry_path)
        self.registry, self.digest = registry, digest
        self.generation += 1
        return registry

    def _restart(self) -> None:
        if self.pool is None:
            return  # checking in the gateway itself until the retry is due
        try:  # once per breakage, not once per chunk of the broken pool
            self.pool.submit(check, [])  # a probe: is the pool broken?
            return
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.restarts += 1
            self._start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class FileWatch:
    """Notices a change of a file by its inode, size and modification time (a rename into place, as
    `govedge provision` saves, gives it a new inode)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.seen = self._look()

    def _look(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def changed(self) -> bool:
        now = self._look()
        if now == self.seen:
            return False
        self.seen = now
        return True


RELOAD_ERRORS = (RegistryError, RegistryChanged, OSError, ValueError)  # a file that does not load


def reload_error(path: str | os.PathLike, exc: BaseException) -> str:
    """One line naming the file that did not load and why."""
    text = one_line(str(exc) or type(exc).__name__, 400)
    return text if str(path) in text else f"{path}: {text}"
