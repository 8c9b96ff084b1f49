"""The gateway's clock: what time it is, and whether that time can be trusted.

A Raspberry Pi has no hardware clock. After a power cut it boots with the time
fake-hwclock saved last (or 1970) and runs in the past until NTP
(systemd-timesyncd) has synchronized it; correctly timed readings then look as
if they came from the future. So the clock check of a reading
(govedge.gateway.admit's Checks) asks first whether the gateway's own clock is
known to be synchronized:

- the kernel's answer, read with adjtimex(2) (``ntp_adjtime`` in libc, modes 0:
  read only, no privilege needed): synchronized while its maximum error is
  below 16 s, the rule systemd applies for ``timedatectl``'s "System clock
  synchronized" (STA_UNSYNC alone is not enough: timesyncd leaves it set to
  keep the kernel off the RTC);
- where adjtimex cannot be called (not Linux), the flag file systemd-timesyncd
  creates at its first synchronization, ``/run/systemd/timesync/synchronized``
  (on a tmpfs: gone at every boot);
- a clock that reads before ``TIME_FLOOR`` is never synchronized, whatever the
  kernel says.

``[verify] clock_synchronized`` overrides the answer: "auto" (the above), "yes"
or "no" (a machine without NTP whose clock is set by hand; tests).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from pathlib import Path
from typing import Callable

# 2024-01-01T00:00:00Z: before the first govedge node existed, so no right clock, a node's or the
# gateway's, reads earlier; a node stamping such a time has a clock that was set wrong
TIME_FLOOR = 1_704_067_200
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")  # systemd-timesyncd, since v239
SETTINGS = ("auto", "yes", "no")
MAXERROR_UNSYNC_US = 16_000_000  # the kernel's NTP_PHASE_LIMIT; systemd's ntp_synced() uses the same bound
TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronized


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (glibc), up to ``tai``, with room for the padding after it."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_padding", ctypes.c_byte * 64)]


_libc = None


def kernel_synchronized() -> bool | None:
    """The kernel's word on its clock (adjtimex(2), read only): True, False, or None where it cannot be asked."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = getattr(_libc, "ntp_adjtime", None) or _libc.adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()  # modes 0: read, change nothing
    state = call(ctypes.byref(tx))
    if state < 0:
        return None
    return state != TIME_ERROR and 0 <= tx.maxerror < MAXERROR_UNSYNC_US


class GatewayClock:
    """The gateway's notion of now and whether it is synchronized.

    ``setting``: "auto", "yes" or "no" (``[verify] clock_synchronized``). ``now``, ``kernel`` and
    ``flag_file`` are the seams tests hand in: a clock a day behind, a kernel that answers what the
    test needs, a flag file of their own."""

    def __init__(self, setting: str = "auto", now: Callable[[], float] = time.time,
                 kernel: Callable[[], bool | None] = kernel_synchronized, flag_file: Path = TIMESYNC_FLAG):
        if setting not in SETTINGS:
            raise ValueError(f"clock_synchronized must be one of {', '.join(SETTINGS)}, not {setting!r}")
        self.setting = setting
        self.now = now
        self.kernel = kernel
        self.flag_file = Path(flag_file)

    def synchronized(self) -> bool | None:
        """True: the clock is synchronized; False: it is not; None: nobody can tell (treated as not)."""
        if self.now() < TIME_FLOOR:
            return False  # 1970, or fake-hwclock's last save of an old image: wrong for sure
        if self.setting != "auto":
            return self.setting == "yes"
        kernel = self.kernel()
        if kernel is not None:
            return kernel
        return True if self.flag_file.exists() else None

    def state(self) -> tuple[str, bool]:
        """The clock in words for `govedge gateway status`, and whether that is fine (no time of day in
        it: live.json is written only when a state changes)."""
        synced = self.synchronized()
        how = "" if self.setting == "auto" else f" (clock_synchronized = {self.setting!r})"
        if synced:
            return f"synchronized{how}", True
        if self.now() < TIME_FLOOR:
            how = " (it reads a time before 2024)"
        word = "NOT synchronized" if synced is False else "not known to be synchronized"
        return (f"{word}{how}: readings ahead of it are stored and flagged clock_unsynced "
                "(check NTP: timedatectl timesync-status)"), False
