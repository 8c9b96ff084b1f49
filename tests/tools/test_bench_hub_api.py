"""`govedge bench hub-api`: what it reports holds together and is what the store holds, on both stores; the
dashboard's query it times is one day of one datastream, every observation of it.

The bench runs small here (a few thousand readings): the figures themselves are for docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from govedge.tools.dev.bench_hub_api import DEVICES, MINUTE, STATION, YEAR_START, bench_hub_api, layout


def test_the_layout_gives_the_station_a_year_or_half_the_store_and_the_rest_to_the_others():
    full = layout(1_000_000)
    assert full[STATION] == (YEAR_START, 525_600)  # a year, a reading a minute
    assert sum(count for _, count in full.values()) == 1_000_000 and len(full) == DEVICES
    small = layout(3001)
    assert small[STATION][1] == 1500 and sum(count for _, count in small.values()) == 3001


@pytest.mark.e2e  # a real `govedge hub web` process
@pytest.mark.postgres  # and a PostgreSQL server the bench starts
def test_the_bench_serves_a_day_of_the_station_from_both_stores():
    report = bench_hub_api(stores=["sqlite", "postgresql"], readings=4000, requests=4)
    assert report["station_readings"] == 2000 and 2000 * MINUTE > 86400  # more than a day: a full day to ask
    for store in ("sqlite", "postgresql"):
        figures = report["stores"][store]
        assert figures["observations_per_request"] == 1440  # a day at a reading a minute, in one page
        assert figures["observations_per_s"] > 0 and figures["sql_observations_per_s"] > 0
        assert abs(figures["ratio"] - figures["observations_per_s"] / figures["sql_observations_per_s"]) < 0.01
        assert figures["p50_ms"] <= figures["p99_ms"]
        assert figures["report_s"] > 0  # govedge hub report wrote the signed report of the station


def test_the_command_refuses_an_unknown_store_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "govedge.tools.cli", "bench", "hub-api", "--stores", "mysql"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "sqlite and postgresql" in proc.stderr and "Traceback" not in proc.stderr
