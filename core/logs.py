"""The services' log lines (gateway run, hub run): for journald when systemd runs them, else for a terminal.

Under systemd the journal stamps every line with its own time, and reads a line's priority from an
sd-daemon prefix ("<4>" for a warning, sd-daemon(3); SyslogLevelPrefix=yes is systemd's default). So
there a line is "<4>WARNING text": no time of our own, and `journalctl -p warning` finds the warnings.
On a terminal or in a file a line starts with its time, as Python's logging writes it.
"""

from __future__ import annotations

import logging
import os
import sys

# sd-daemon(3): SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7
TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def priority(level: int) -> int:
    """The syslog priority of a logging level: the first of PRIORITIES the level reaches."""
    return next((p for at, p in PRIORITIES if level >= at), DEBUG_PRIORITY)


def under_journald(stream=None, environ=None) -> bool:
    """Whether the stream (default standard error) goes to the journal.

    systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connected to the journal; a
    stream redirected elsewhere (a file, a pipe to another program) no longer matches it. Without
    JOURNAL_STREAM, INVOCATION_ID (set for every process systemd starts) is taken as the sign."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    journal = environ.get("JOURNAL_STREAM")
    if not journal:
        return bool(environ.get("INVOCATION_ID"))
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's captured stream)
        return False
    return journal == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """"<priority>LEVEL text", the prefix on every line of the record (a traceback keeps its priority)."""

    def __init__(self):
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def setup(level: int = logging.INFO, stream=None) -> logging.Handler:
    """Sends the root logger's records to standard error (or ``stream``), formatted for where it goes.

    Replaces the handlers a previous call set up; returns the handler."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if under_journald(stream) else logging.Formatter(TERMINAL_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_govedge", False)]:
        root.removeHandler(old)
    handler._govedge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler
