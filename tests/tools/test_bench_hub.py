"""`govedge bench hub`: what it reports is what it stored, on both stores, whatever the timings were.

The bench runs small here (a few batches): the figures themselves are for docs/BENCHMARKS.md, measured on a
quiet machine; these tests hold the report's fields to each other and to the store the hubs wrote.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from govedge.tools.dev.bench_hub import bench_hub, split

FIGURES = ("readings_per_s", "ratio", "main_cpu_us_per_reading", "workers_cpu_us_per_reading",
           "store_cpu_us_per_reading")


def test_verification_processes_are_shared_out_between_hub_processes_adding_up_to_the_cores():
    assert split(2, 1) == [2]
    assert split(2, 2) == [1, 1]
    assert split(3, 2) == [2, 1]
    assert split(1, 2) == [1, 0]  # the second hub checks device signatures in its own process


def assert_consistent(report: dict, store: str, hubs: list[int], readings: int) -> None:
    assert report["store"] == store
    assert report["readings"] == report["stored_readings"] == readings
    assert [entry["hubs"] for entry in report["scaling"]] == hubs
    first = report["scaling"][0]
    assert report["hubs"] == hubs[0] and report["workers"] == sum(first["verify_workers"])
    for name in FIGURES:
        assert report[name] == first[name], name
    for entry in report["scaling"]:
        assert len(entry["verify_workers"]) == entry["hubs"]
        assert sum(entry["verify_workers"]) == report["workers"]  # the same processes, shared out
        assert sum(entry["batches_per_hub"]) == report["batches"] and len(entry["batches_per_hub"]) == entry["hubs"]
        assert entry["readings_per_s"] > 0 and entry["main_cpu_us_per_reading"] > 0
        # both rounded: readings_per_s to 0.1, the ratio to 0.001
        assert abs(entry["ratio"] - entry["readings_per_s"] / report["verify_limit_per_s"]) <= 0.0006
    assert report["meets_target"] == (report["readings_per_s"] / report["verify_limit_per_s"] >= report["target_ratio"])
    size = report["bytes_per_reading"]
    # a reading's row holds its device-signed message (more than 100 bytes); each reading has three measurements
    assert size["readings"] > 100 and size["measurements"] > 0
    assert size["total"] >= size["readings"] + size["measurements"]


@pytest.mark.e2e  # the hub's processes and a real Mosquitto
@pytest.mark.postgres  # and a PostgreSQL server the bench starts
def test_bench_on_postgresql_reports_what_two_hub_processes_stored_and_its_bytes_on_disk():
    # 1,000 readings: the server's CPU is read in clock ticks (10 ms), and 200 readings could cost it less than one
    report = bench_hub(store="postgresql", hubs=[1, 2], devices=20, batches=4, per_batch=250, workers=2)
    assert_consistent(report, "postgresql", [1, 2], 1000)
    assert report["scaling"][1]["verify_workers"] == [1, 1]
    assert min(report["scaling"][1]["batches_per_hub"]) > 0  # the broker shared the batches out between both
    assert all(entry["store_cpu_us_per_reading"] > 0 for entry in report["scaling"])  # the server's own work


@pytest.mark.e2e
def test_bench_on_sqlite_reports_what_it_stored_and_the_file_with_its_wal():
    report = bench_hub(store="sqlite", hubs=[1], devices=20, batches=4, per_batch=50, workers=1)
    assert_consistent(report, "sqlite", [1], 200)
    assert report["store_cpu_us_per_reading"] is None  # SQLite works inside the main process, counted there


def test_bench_hub_refuses_a_hub_count_below_one_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "bench", "hub", "--hubs", "1,0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("govedge bench: argument --hubs: '1,0': every number of hub processes is at least 1 "
                           "(see govedge bench --help)\n")
