"""Supervised parts: what nobody foresaw in a thread, a paho callback or a housekeeping pass ends
neither the part nor the gateway (gateway/README.md, "metrics and status").

An unexpected exception is logged (one line: the part, the exception's class and text), counted
(``counters["part_faults_PART"]``, exported as ``govedge_part_faults_total{part="PART"}``) and:

- in a thread (the uplink, the anchor stage: ``run_supervised``): the part's state says it failed
  and is restarting, and its body runs again after a pause that grows from 1 s to 60 s and starts
  over after a minute of good running;
- in a paho callback (``guard_callbacks``): the callback ends there; paho's network thread goes on;
- in a pass of the main loop's housekeeping: the loop goes on, the next pass comes as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

from govedge.core.errors import text_of

log = logging.getLogger("govedge.gateway")

FAULTS = "part_faults_"  # counters[FAULTS + part]: unexpected exceptions caught in that part


def fault(counters: Counter, part: str, exc: BaseException, what: str = "") -> str:
    """Counts and logs one unexpected exception of ``part``; returns its one-line description."""
    counters[FAULTS + part] += 1
    line = f"{type(exc).__name__}: {text_of(exc)}"
    log.error("%s: unexpected %s%s", part, line, f"; {what}" if what else "")
    log.debug("%s: the traceback of the unexpected exception", part, exc_info=exc)
    return line


class Backoff:
    """Pauses between restarts: ``first`` doubling up to ``cap``; back to ``first`` once the part ran
    ``reset_after`` seconds without failing."""

    def __init__(self, first: float = 1.0, cap: float = 60.0, reset_after: float = 60.0):
        self.first, self.cap, self.reset_after = first, cap, reset_after
        self.pause = first

    def next(self, ran_s: float) -> float:
        if ran_s >= self.reset_after:
            self.pause = self.first
        pause = self.pause
        self.pause = min(self.pause * 2, self.cap)
        return pause


def run_supervised(part: str, body: Callable[[], None], stopping: threading.Event, counters: Counter,
                   on_state: Callable[[str, bool], None], backoff: Backoff) -> None:
    """Runs ``body`` until it returns (the part was stopped); whatever it raises is logged, counted, told
    as the part's state, and ``body`` runs again after the backoff's pause. ``body`` cleans up after itself
    (its ``finally``) before the failure is told, so what it tells last on the way out is overwritten."""
    while not stopping.is_set():
        began = time.monotonic()
        try:
            body()
            return
        except Exception as exc:  # noqa: BLE001 - whatever nobody foresaw: the part restarts
            pause = backoff.next(time.monotonic() - began)
            line = fault(counters, part, exc, f"restarting in {pause:g} s")
        try:
            on_state(f"failed ({line}); restarting in {pause:g} s", False)
        except Exception as exc:  # noqa: BLE001 - telling the state may fail as well (a full disk)
            log.error("%s: its state could not be told: %s: %s", part, type(exc).__name__, text_of(exc))
        stopping.wait(pause)


CALLBACKS = ("on_connect", "on_connect_fail", "on_disconnect", "on_message", "on_subscribe", "on_publish")


def guard_callbacks(client, part: str, counters: Counter) -> None:
    """Wraps the paho callbacks set on ``client`` so that what one raises is logged and counted and never
    ends paho's network thread. Call it once the callbacks are set."""
    for name in CALLBACKS:
        fn = getattr(client, name, None)
        if fn is not None:
            setattr(client, name, _guarded(fn, f"{part}_callback", counters))


def _guarded(fn: Callable, part: str, counters: Counter) -> Callable:
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - paho's network thread must not end
            fault(counters, part, exc, f"{getattr(fn, '__name__', 'callback')} ended there")
            return None

    guarded.__name__ = getattr(fn, "__name__", "guarded")
    return guarded
