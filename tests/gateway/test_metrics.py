"""The gateway's Prometheus endpoint (govedge.gateway.metrics), scraped from a running gateway as Prometheus
scrapes it: names `promtool check metrics` accepts, every labelled series there from the first scrape, each
documented in gateway/README.md, and gauges that read indexes, not the whole store."""

from __future__ import annotations

import ast
import re
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from govedge.core import topics
from govedge.gateway import metrics
from govedge.gateway.filter import RULES
from govedge.gateway.store import Store
from govedge.tools.dev.broker import free_port
from support import wait_until
from support.hubkit import publish
from support.rig import running  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_endpoint_of_a_running_gateway_passes_promtool_check_metrics(running):
    port = free_port()
    r = running(anchor=True, metrics_port=port)
    r.send(3)
    publish(r.local.port, [(topics.reading(r.world.devices[0]), b"garbage")])
    wait_until(lambda: r.hub_count() >= 6, what="the readings at the hub")
    text = scrape(port)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint warning either
    got = samples(text)
    assert got[("govedge_quarantined_total", (("code", "not_cbor"),))] == 1
    assert got[("govedge_verified_total", ())] >= 6
    assert not any(name.startswith("govedge_quarantined_by_reason") for name, _ in got)


def test_every_labelled_series_is_there_at_zero_before_the_first_message(running):
    port = free_port()
    r = running(metrics_port=port)
    got = samples(scrape(port))
    assert len(metrics.QUARANTINE_CODES) == len(set(metrics.QUARANTINE_CODES)) >= 20
    for code in metrics.QUARANTINE_CODES:
        assert got[("govedge_quarantined_total", (("code", code),))] == 0, code
    for rule in RULES:
        assert got[("govedge_held_back_total", (("rule", rule),))] == 0, rule
    for part in ("uplink", "anchor", "ingest_callback", "uplink_callback", "housekeeping"):
        assert got[("govedge_part_faults_total", (("part", part),))] == 0, part
    for code in ("unreachable", "rejected", "mismatch"):
        assert got[("govedge_anchor_errors_total", (("code", code),))] == 0, code
    # a moment that has not come yet is 0, not an age of the epoch 1970
    assert got[("govedge_oldest_unsent_batch_timestamp_seconds", ())] == 0
    assert got[("govedge_oldest_unanchored_epoch_timestamp_seconds", ())] == 0
    assert got[("govedge_last_reading_timestamp_seconds", ())] == 0
    assert got[("govedge_build_info", (("version", metrics._version()),))] == 1
    r.send(1)
    wait_until(lambda: samples(scrape(port))[("govedge_last_reading_timestamp_seconds", ())] > 0,
               what="the last reading's timestamp")
    assert abs(samples(scrape(port))[("govedge_last_reading_timestamp_seconds", ())] - time.time()) < 60


def test_the_endpoint_stops_with_the_gateway_and_its_port_is_free_again(running):
    port = free_port()
    r = running(metrics_port=port)
    scrape(port)
    r.close()
    with pytest.raises(OSError):
        scrape(port)
    r.close = lambda: None  # closed already


# -- every quarantine code the gateway can give is a series ---------------------------------------------

# codes those modules name that never reach the quarantine table, and why
NOT_QUARANTINE = {
    "duplicate": "a message the gateway has already: counted in govedge_duplicates_total, acknowledged, not kept",
    "bad_key": "a registry key that is not P-256: refused when the registry is loaded, never for a message",
}


def _codes_named(path: Path, calls: set[str]) -> set[str]:
    """The string constants given first to calls of ``calls`` (the refusals a module raises or returns)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in calls:
                found.add(node.args[0].value)
    return found


def _quarantined_by_the_service() -> set[str]:
    """The codes service.py passes to its own _quarantine as a constant."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / "gateway" / "service.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_quarantine":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def test_the_quarantine_codes_are_every_code_the_gateway_can_give():
    named = (_codes_named(ROOT / "core" / "cose.py", {"WireError"})
             | _codes_named(ROOT / "core" / "wire.py", {"WireError", "Signer"})
             | _codes_named(ROOT / "gateway" / "admit.py", {"Refusal"})
             | _quarantined_by_the_service()
             | {"retired_key", "revoked_key", "internal_error"})  # core.registry's f"{word}_key", core.errors
    assert {"not_cbor", "bad_signature", "unknown_device", "bad_record", "over_share", "future_time"} <= named
    missing = named - set(NOT_QUARANTINE) - set(metrics.QUARANTINE_CODES)
    assert not missing, f"codes the gateway can quarantine with that metrics.QUARANTINE_CODES does not list: {missing}"
    never = set(metrics.QUARANTINE_CODES) - named
    assert not never, f"metrics.QUARANTINE_CODES lists codes nothing gives: {never}"


# -- documented ----------------------------------------------------------------------------------------------

def documented() -> dict[str, tuple[str, str]]:
    """gateway/README.md's metrics table: name -> (type, labels)."""
    text = (ROOT / "gateway" / "README.md").read_text()
    table = text[text.index("| metric | type |"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[1], cells[2].strip("`"))
    return rows


def test_every_exported_metric_is_documented_with_its_type_and_labels(running):
    port = free_port()
    running(metrics_port=port)
    exported = {}
    for family in text_string_to_metric_families(scrape(port)):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = sorted({k for s in family.samples for k in s.labels})
        exported[name] = (family.type, ", ".join(labels) or "—")
    docs = documented()
    assert len(exported) > 30
    assert {n: t for n, t in exported.items() if docs.get(n) != t} == {}, "exported, not so documented"
    assert sorted(set(docs) - set(exported)) == [], "documented, not exported"


# -- cheap scrapes ------------------------------------------------------------------------------------------

def _store_with(path: Path, readings: int, batches: int, acked: int, epochs: list[int]) -> None:
    """A store of ``readings`` readings in ``batches`` batches (built at 1000 + seq), the hub's cursor at
    ``acked``, and epochs with ``epochs``' confirmed flags (closed at 5000 + number)."""
    store = Store(path, "OFF")
    with store:
        per = readings // batches
        store.db.executemany(
            "INSERT INTO readings (device_id, seq, kind, node_time, received_at, message, batch_seq) "
            "VALUES (?, ?, 'reading', ?, ?, x'a0', ?)",
            ((f"esp32-{i % 50:04d}", i, i, 2000.0 + i, i // per) for i in range(readings)))
        store.db.executemany("INSERT INTO batches (seq, created_at, size, root, cose) VALUES (?, ?, ?, x'00', x'00')",
                             ((seq, 1000.0 + seq, per) for seq in range(batches)))
        if acked >= 0:
            store.advance("hub", acked)
        store.db.executemany("INSERT INTO epochs (number, first_batch, last_batch, size, root, heads, closed_at, "
                             "confirmed) VALUES (?, 0, 0, 1, x'00', x'80', ?, ?)",
                             ((n, 5000.0 + n, confirmed) for n, confirmed in enumerate(epochs)))
    store.close()


def test_the_gauges_from_the_store_are_its_backlog_and_moments(tmp_path):
    _store_with(tmp_path / "gateway.db", readings=100, batches=10, acked=6, epochs=[1, 1, 0, 1, 0])
    found = metrics.lookups(tmp_path / "gateway.db")
    assert found == {"batches_unsent": 3, "oldest_unsent_batch_at": 1007.0, "epochs_unanchored": 2,
                     "oldest_unanchored_epoch_at": 5002.0, "last_reading_at": 2099.0}
    _store_with(tmp_path / "empty.db", readings=0, batches=1, acked=0, epochs=[])
    assert metrics.lookups(tmp_path / "empty.db") == {
        "batches_unsent": 0, "oldest_unsent_batch_at": 0.0, "epochs_unanchored": 0,
        "oldest_unanchored_epoch_at": 0.0, "last_reading_at": 0.0}


def _steps(path: Path) -> int:
    """SQLite virtual machine steps (in thousands) the scrape's lookups take on the store at ``path``."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    count = [0]

    def tick():
        count[0] += 1
        return 0

    db.set_progress_handler(tick, 1000)
    metrics.lookups_in(db)
    db.close()
    return count[0]


def test_a_scrape_costs_the_same_on_two_hundred_thousand_readings_as_on_two_hundred(tmp_path):
    """Counted in SQLite's steps, not timed: a COUNT(*) over the readings would take 200,000 of them."""
    _store_with(tmp_path / "small.db", readings=200, batches=20, acked=15, epochs=[1, 0])
    _store_with(tmp_path / "large.db", readings=200_000, batches=20, acked=15, epochs=[1, 0])
    small, large = _steps(tmp_path / "small.db"), _steps(tmp_path / "large.db")
    assert large <= small + 1, (small, large)
    # the measure itself sees a scan: counting the readings takes hundreds of thousands of steps
    db = sqlite3.connect(tmp_path / "large.db")
    count = [0]
    db.set_progress_handler(lambda: count.__setitem__(0, count[0] + 1), 1000)
    db.execute("SELECT count(*) FROM readings WHERE batch_seq IS NOT NULL").fetchone()
    assert count[0] > 100


def test_the_counters_the_code_names_are_all_exported():
    """Every counters["..."] the gateway's modules name is a metric, alone or as a label of a family."""
    named = set()
    for path in (ROOT / "gateway").glob("*.py"):
        for key in re.findall(r"counters\[([^\]]+)\]", path.read_text()):  # the whole names a key expression holds
            named |= set(re.findall(r'(?<!== )"([a-z0-9_]+)"', key))  # not what a condition compares with
    serial = ast.literal_eval(re.search(r"DEFRAMER_COUNTERS = (\{.*?\})", (ROOT / "gateway" / "serial_ingest.py")
                                        .read_text(), re.S).group(1))
    named |= set(serial.values())
    named |= set(re.findall(r'_count\("([a-z0-9_]+)"', (ROOT / "gateway" / "serial_ingest.py").read_text()))
    labelled = tuple(prefix for prefix, *_ in metrics.LABELLED)
    missing = {n for n in named if n not in metrics.COUNTERS and not n.startswith(labelled)} - {"quarantined"}
    assert {"received", "verified", "epochs_delivered", "serial_bad_crc"} <= named
    assert not missing, f"counted but not exported: {sorted(missing)}"
