"""The words `govedge flash` knows a node's state by are the words the firmware writes.

govedge.tools.field.monitor holds the tags and phrases of the node's log that the field tools
rely on; the firmware writes them on its own (it does not import desktop code). These tests
find each one literally in firmware/, so rewording a log line the tools read fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from govedge.tools.field import firmware, monitor

NODE_DOC = Path(__file__).resolve().parents[2] / "docs" / "NODE.md"


def _firmware_trees():
    return {p.name: ast.parse(p.read_text()) for p in firmware.sources()}


def _strings(tree):
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _log_tags(tree):
    # the first argument of every log("tag", text) and self.log("tag", text) call
    return {n.args[0].value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
            and (getattr(n.func, "id", None) == "log" or getattr(n.func, "attr", None) == "log")}


@pytest.mark.parametrize("tag", monitor.TAGS)
def test_every_tag_the_tools_read_is_one_the_firmware_logs(tag):
    where = [name for name, tree in _firmware_trees().items() if tag in _log_tags(tree)]
    assert where, f"no firmware module logs a line tagged {tag!r}: flash would never see one"


@pytest.mark.parametrize("phrase", monitor.PHRASES)
def test_every_phrase_the_tools_read_stands_literally_in_the_firmware(phrase):
    where = [name for name, tree in _firmware_trees().items() if any(phrase in s for s in _strings(tree))]
    assert where, f"{phrase!r} is in no string of firmware/: a log line the tools read was reworded"


def test_micropython_names_a_traceback_as_flash_expects():
    # MicroPython's own words, not the firmware's: the real interpreter says them
    proc = firmware.run_micropython("def cycle():\n    raise ValueError('bad')\ncycle()\n")
    said = (proc.stdout + proc.stderr).decode().splitlines()
    assert said[0] == monitor.TRACEBACK + ":" and said[-1] == "ValueError: bad", said


def _doc_rows():
    # docs/NODE.md, the table of the node's lines and what flash reports for each
    table = NODE_DOC.read_text().split("| the node's line | flash reports |\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| ([^|]+?) \|$", table, re.M)
    return [(line, report) for line, report in rows if not line.startswith("Traceback")]


def test_the_flashing_doc_has_its_table_of_node_lines():
    assert len(_doc_rows()) >= 7


@pytest.mark.parametrize("line, report", _doc_rows())
def test_flash_reports_each_line_as_the_doc_says(line, report):
    line = line.replace("…", "x")
    if not line.startswith("["):
        line = "[      0.021] " + line  # the doc leaves out the seconds since boot
    assert monitor.judge(line) == ("error", report)


@pytest.mark.parametrize("line, verdict", [
    ("[      0.013] node: esp32-0007 up: seq from 0, 0 messages waiting in the buffer", ("up", "esp32-0007")),
    ("[      0.024] mqtt: connected to 127.0.0.1:45537", ("connected", "127.0.0.1:45537")),
    ("[      0.031] uplink: first message delivered (#0)", ("delivered", "#0")),
    ("[     61.200] uplink: buffer sent", None),
    ("[     61.200] sensor: bme280 working again", None),
    ("[      1.002] wifi: connected, address 10.20.0.17", None),
])
def test_flash_reads_a_working_node_from_its_lines(line, verdict):
    assert monitor.judge(line) == verdict
