"""`govedge bench hub-api [--store sqlite,postgresql] [--readings N] --json`: how fast the hub's SensorThings API
serves a dashboard's query over a store of a city's size, against the store's own speed for the same rows.

The store: ``readings`` signed readings (default 1,000,000) of 20 devices with a BME280 and an SDS011 (five
values a reading), written by the hub's own store code (HubStore.add_batch, batches of 500 signed by a gateway):
one station reads once a minute for a whole year (525,600 readings; a store smaller than a million gives it
less, at least half), the others share the rest, once a minute from June. On SQLite, a file; on PostgreSQL, a cluster of the bench's own with
fsync on (govedge.tools.dev.postgres), in its monthly partitions.

The query: `Datastreams('STATION:pm10')/Observations` with ``$filter=phenomenonTime ge DAY and phenomenonTime
lt DAY+1`` and ``$orderby=phenomenonTime`` (1,440 observations, one page), for days drawn at random from the
station's year, asked of a real `govedge hub web` process over HTTP, one request after another on one
connection. Reported: observations served a second, latency p50 and p99, the server's CPU per request; the
same rows read by the same SQL the API sends, in this process (the limit: what the store gives without the
API), and the ratio of the two. Also the latest value of every datastream (`Things?$expand=Datastreams(
$expand=Observations($orderby=phenomenonTime desc;$top=1))`), p50; and ``report_s``, the time
`govedge hub report` takes for the station's year (docs/REPORT.md), from its start to the signed file.
"""

from __future__ import annotations

import calendar
import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import batch, wire
from govedge.core.registry import Registry
from govedge.hub.gateways import Gateways
from govedge.hub.store import HubStore
from govedge.tools.dev.bench_gateway import _cpu_s, _firmware_modules, _peak_rss_kib
from govedge.tools.dev.broker import free_port
from govedge.tools.dev.postgres import PostgresServer

STORES = ("sqlite", "postgresql")
GATEWAY = "gw-bench"
DEVICES = 20
STATION = "bench-0000"
YEAR = 2025
YEAR_START = calendar.timegm((YEAR, 1, 1, 0, 0, 0))
OTHERS_START = calendar.timegm((YEAR, 6, 1, 0, 0, 0))
MINUTE = 60
PER_BATCH = 500
QUANTITY = "pm10"


def _values(device: str, seq: int) -> list[tuple]:
    """A BME280 and an SDS011 reading, with a daily swing so that a day has its shape."""
    minute = seq % 1440
    swing = abs(minute - 720)
    return [("temp", "Cel", (800 + swing + seq % 13, -2)), ("hum", "%RH", (5000 + swing * 2, -2)),
            ("press", "Pa", 100000 + seq % 900), ("pm2_5", "ug/m3", (80 + swing // 4 + seq % 17, -1)),
            ("pm10", "ug/m3", (150 + swing // 3 + seq % 29, -1))]


def _signed(reading, key: ec.EllipticCurvePrivateKey, device: str, seq: int, t: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    import cbor2

    payload = reading.cbor.encode(reading.pack(seq, t, _values(device, seq)))
    protected = reading.protected_header(device.encode())
    r, s = decode_dss_signature(key.sign(wire.sig_structure(protected, payload), ec.ECDSA(hashes.SHA256())))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))


def layout(readings: int) -> dict[str, tuple[int, int]]:
    """device -> (first time, how many readings, one a minute)."""
    # a year at a reading a minute when the store has room for it beside the others' 474,400 (a store of a
    # million), else half the store
    station = min(525_600, max(readings // 2, readings - 474_400))
    rest = readings - station
    out = {STATION: (YEAR_START, station)}
    for i in range(1, DEVICES):
        out[f"bench-{i:04d}"] = (OTHERS_START, rest // (DEVICES - 1) + (1 if i <= rest % (DEVICES - 1) else 0))
    return out


def fill(folder: Path, urls: list[str], readings: int) -> dict:
    """The registry, gateways file and the stores at ``urls``, all with the same signed readings."""
    keys = {device: ec.generate_private_key(ec.SECP256R1()) for device in layout(readings)}
    registry = Registry(path=folder / "registry.json")
    for i, (device, key) in enumerate(keys.items()):
        registry.add(device, "esp32", ["bme280", "sds011"], key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        registry.locate(device, 51.90 + 0.01 * (i % 5), 7.55 + 0.02 * (i // 5), None, f"bench station {i}",
                        since="2024-12-01T00:00:00Z")
    registry.save()
    gw_key = ec.generate_private_key(ec.SECP256R1())
    gateways = Gateways(path=folder / "gateways.json")
    gateways.add(GATEWAY, gw_key.public_key())
    gateways.save()
    reading = _firmware_modules()
    stores = [HubStore(url, synchronous="NORMAL") for url in urls]
    began = time.monotonic()
    try:
        for store in stores:
            store.prepare(range(YEAR_START, YEAR_START + 366 * 86400, 27 * 86400))
        pending: list[bytes] = []
        number = 0

        def flush() -> None:
            nonlocal number, pending
            cose, _root = batch.sign(gw_key, GATEWAY, number, int(time.time()), pending, [])
            b = batch.verify(cose, lambda g: [gw_key.public_key()] if g == GATEWAY else [])
            decoded = [wire.decode_unverified(m) for m in pending]
            for store in stores:
                with store.transaction():
                    store.add_batch(b, decoded)
            number += 1
            pending = []

        for device, (start, count) in layout(readings).items():
            for seq in range(count):
                pending.append(_signed(reading, keys[device], device, seq, start + seq * MINUTE))
                if len(pending) == PER_BATCH:
                    flush()
        if pending:
            flush()
    finally:
        for store in stores:
            store.close()
    return {"fill_s": round(time.monotonic() - began, 1)}


class Client:
    """One keep-alive HTTP connection to the API."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
        return body


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def dashboard_path(day: float, data_array: bool = False) -> str:
    options = {"$filter": f"phenomenonTime ge {_iso(day)} and phenomenonTime lt {_iso(day + 86400)}",
               "$orderby": "phenomenonTime", "$top": "1440"}
    if data_array:
        options.update({"$resultFormat": "dataArray", "$select": "id,phenomenonTime,result"})
    return f"/v1.1/Datastreams('{STATION}:{QUANTITY}')/Observations?" + urllib.parse.urlencode(options)


def _sql_rows(url: str, days: list[float]) -> tuple[int, float]:
    """The API's SQL for the same days, read in this process: (rows, seconds)."""
    from govedge.hub import odata, sta

    api = sta.Api(Path("/nonexistent"), url)
    reader = api.reader
    order = api._order(odata.Query(orderby=((("phenomenonTime",), False),)))
    rows, began = 0, time.perf_counter()
    for day in days:
        where = ("m.at >= ? AND m.at < ?", [day, day + 86400])
        rows += len(api._rows(sta.Scope(device_id=STATION, name=QUANTITY), where, order, 0, 1441))
    took = time.perf_counter() - began
    reader.close()
    return rows, took


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(folder: Path, url: str, station_days: int, requests: int) -> dict:
    (folder / "hub.toml").write_text(
        f"[hub]\nregistry = {json.dumps(str(folder / 'registry.json'))}\n"
        f"gateways = {json.dumps(str(folder / 'gateways.json'))}\n[store]\nurl = {json.dumps(url)}\n"
        '[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\nclient_id = "bench-api"\n')
    port = free_port()
    log = open(folder / f"web-{port}.log", "ab")
    server = subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "hub", "web", "--config",
                               str(folder / "hub.toml"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while b"the status page on" not in (folder / f"web-{port}.log").read_bytes():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the web service did not start: " + (folder / f"web-{port}.log").read_text())
            time.sleep(0.05)
        client = Client(port)
        rng = random.Random(7)
        days = [YEAR_START + rng.randrange(station_days) * 86400 for _ in range(requests)]
        for day in days[:5]:  # the first requests open connections and warm the caches
            client.get(dashboard_path(day))
        cpu_before = sum(_cpu_s(server.pid))
        latencies, served = [], 0
        began = time.perf_counter()
        for day in days:
            t0 = time.perf_counter()
            body = client.get(dashboard_path(day))
            latencies.append(time.perf_counter() - t0)
            served += len(json.loads(body)["value"])
        took = time.perf_counter() - began
        cpu = sum(_cpu_s(server.pid)) - cpu_before
        array_began, array_served = time.perf_counter(), 0
        for day in days[: requests // 2]:
            body = client.get(dashboard_path(day, data_array=True))
            array_served += sum(len(g["dataArray"]) for g in json.loads(body)["value"])
        array_took = time.perf_counter() - array_began
        latest = []
        path = "/v1.1/Things?" + urllib.parse.urlencode(
            {"$expand": "Datastreams($expand=Observations($orderby=phenomenonTime desc;$top=1))"})
        for _ in range(10):
            t0 = time.perf_counter()
            client.get(path)
            latest.append(time.perf_counter() - t0)
        rss = _peak_rss_kib(server.pid)
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    sql_rows, sql_took = _sql_rows(url, days)
    api_rate = served / took
    sql_rate = sql_rows / sql_took
    return {
        "requests": requests,
        "observations_per_request": round(served / requests),
        "observations_per_s": round(api_rate),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
        "server_cpu_ms_per_request": round(cpu / requests * 1000, 1),
        "sql_observations_per_s": round(sql_rate),
        "ratio": round(api_rate / sql_rate, 3),
        "data_array_observations_per_s": round(array_served / array_took),
        "latest_of_every_datastream_p50_ms": round(statistics.median(latest) * 1000, 1),
        "server_rss_mb": round(rss / 1024, 1),
    }


def report_seconds(folder: Path, store: str) -> float:
    """Wall time of `govedge hub report` for the station's year, from its start to the signed file written
    (no [anchor]: the chain's time is not the store's)."""
    config = folder / "hub.toml"
    if not (folder / "hub-key.pem").exists():
        subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "keygen", "--config", str(config)],
                       check=True, capture_output=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "report", "--config", str(config),
                    "--station", STATION, "--year", str(YEAR), "--output", str(folder / f"report-{store}.cbor")],
                   check=True, capture_output=True)
    return round(time.perf_counter() - began, 2)


def bench_hub_api(stores: list[str] | tuple[str, ...] = STORES, readings: int = 1_000_000,
                  requests: int = 200) -> dict:
    unknown = [s for s in stores if s not in STORES]
    if unknown or not stores:
        raise ValueError(f"stores must be some of {list(STORES)}, not {list(stores)!r}")
    if readings < 2 * PER_BATCH:
        raise ValueError(f"readings must be at least {2 * PER_BATCH}")
    station_days = max(1, layout(readings)[STATION][1] // 1440)
    result: dict = {"readings": readings, "devices": DEVICES, "station": STATION,
                    "station_readings": layout(readings)[STATION][1], "query": f"one day of {QUANTITY}, "
                    "ordered by phenomenonTime", "stores": {}}
    with tempfile.TemporaryDirectory(prefix="govedge-bench-hub-api-") as tmp:
        folder = Path(tmp)
        server = PostgresServer(fsync=True).start() if "postgresql" in stores else None
        try:
            urls = {s: (server.new_database() if s == "postgresql" else str(folder / "hub.db")) for s in stores}
            result.update(fill(folder, list(urls.values()), readings))
            for store, url in urls.items():
                figures = measure(folder, url, station_days, requests)
                figures["report_s"] = report_seconds(folder, store)
                result["stores"][store] = figures
        finally:
            if server is not None:
                server.stop()
    result["cpu"] = os.cpu_count()
    return result


def main_json(**kw) -> str:
    return json.dumps(bench_hub_api(**kw), indent=2)


if __name__ == "__main__":  # pragma: no cover
    print(main_json())
