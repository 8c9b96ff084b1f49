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
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from govedge.core import wire
from govedge.core.errors import internal_error
from govedge.core.registry import Registry

log = logging.getLogger("govedge.verify")

Result = wire.Reading | tuple[str, str]  # a verified reading, or why it is not one

_registry: Registry | None = None  # a worker process's own copy

START_ATTEMPTS = 3
RETRY_S = 60


def _load(path: str) -> None:
    global _registry
    _registry = Registry.load(path)


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
        self.registry = Registry.load(self.registry_path)  # for the main process's own checks
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
                                       initializer=_load, initargs=(str(self.registry_path),))
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
            return self.pool.submit(check, payloads)
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

    def _restart(self) -> None:
        if self.pool is None:
            return  # checking in the gateway itself until the retry is due
        try:  # once per breakage, not once per chunk of the broken pool
            self.pool.submit(check, [])
            return
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.restarts += 1
            self._start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
