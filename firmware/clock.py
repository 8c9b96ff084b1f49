# Time on the node: monotonic ticks for scheduling, and the wall clock, which is
# trusted only once it has been set (from NTP on boards, by the OS on Linux).

import time

# a wall clock before this (2025-01-01) has not been set
_EARLIEST = 1735689600
# seconds between 1970-01-01 and the port's epoch (2000-01-01 on some bare-metal ports)
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0

try:
    ticks_ms = time.ticks_ms
    ticks_add = time.ticks_add
    ticks_diff = time.ticks_diff
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def unix_time():
    """Whole seconds since 1970-01-01 UTC, or None while the clock is not set."""
    t = int(time.time()) + _EPOCH
    return t if t >= _EARLIEST else None
