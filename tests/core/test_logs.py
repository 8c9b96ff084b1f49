"""The services' log lines: under journald a syslog priority and no time of their own, elsewhere a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys

# what `gateway run` and `hub run` do before anything else: govedge.core.logs.setup(), then log
SCRIPT = """
import logging
from govedge.core import logs
logs.setup()
log = logging.getLogger("govedge.gateway")
log.debug("not shown at INFO")
log.info("gateway gw-1 running")
log.warning("uplink: the hub refuses the connection")
log.error("store: disk full")
try:
    raise KeyError("x")
except KeyError:
    log.exception("housekeeping failed")
"""


def _run(environ: dict, journal_stream: bool = False) -> list[str]:
    """The script's standard error as lines; ``journal_stream``: JOURNAL_STREAM names that very pipe, as
    systemd sets it for the stream it connects to the journal."""
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    env.update(environ)
    if journal_stream:
        st = os.fstat(write)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stderr=write, env=env)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    assert proc.wait(60) == 0, text
    return text.splitlines()


def test_under_journald_every_line_starts_with_its_priority_and_carries_no_time():
    lines = _run({}, journal_stream=True)
    assert lines[:3] == ["<6>INFO gateway gw-1 running", "<4>WARNING uplink: the hub refuses the connection",
                         "<3>ERROR store: disk full"]
    # a traceback keeps the priority of its record on every line (journald reads one record per line)
    assert lines[3] == "<3>ERROR housekeeping failed" and len(lines) > 5
    assert all(line.startswith("<3>") for line in lines[3:]) and lines[-1] == "<3>KeyError: 'x'"
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines)


def test_started_by_systemd_without_a_journal_stream_is_taken_as_journald():
    assert _run({"INVOCATION_ID": "0123456789abcdef0123456789abcdef"})[0] == "<6>INFO gateway gw-1 running"


def test_on_a_terminal_or_redirected_elsewhere_lines_start_with_their_time():
    # JOURNAL_STREAM inherited from a shell under systemd, but standard error now goes to another file
    for environ in ({}, {"JOURNAL_STREAM": "8:12345"}):
        lines = _run(environ)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway gw-1 running", lines[0]), lines
        assert not any(line.startswith("<") for line in lines)


def test_priorities_follow_sd_daemon():
    import logging

    from govedge.core.logs import priority

    assert [priority(level) for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO,
                                          logging.DEBUG)] == [2, 3, 4, 6, 7]


def test_a_service_that_cannot_start_says_so_as_an_error_in_the_journal(tmp_path):
    # `gateway run` with a config that is not there, as systemd runs it: the one line carries priority 3
    read, write = os.pipe()
    st = os.fstat(write)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "gateway", "run", "--config",
                             str(tmp_path / "gateway.toml")], stderr=write, env=env)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    assert proc.wait(60) == 2
    assert text.startswith("<3>govedge gateway run: ") and text.count("\n") == 1, text
