"""`govedge bench hub --store sqlite|postgresql --hubs 1,2 --json`: readings per second through the hub's
ingest service, the CPU and the disk a reading costs, and how several hub processes add up.

Gateway batches of pre-signed readings of many devices are published to a real
Mosquitto; the hub (`govedge hub run`, its own processes, default configuration
but for the addresses, the store and its client id) takes them from its shared
subscription, checks the gateway's and every device's signature, and commits
them. The limit it is held against, P-256 verifications per second with
cryptography on one core, is measured in the same run (the same definition as
the gateway's), after the hubs have stopped.

The store is a SQLite file, or a PostgreSQL cluster of the bench's own
(govedge.tools.dev.postgres) with fsync on, as a hub's database server runs.
Each number in ``hubs`` is one run of the same batches on a fresh broker and a
fresh store, with that many hub processes on one shared subscription
(`[hub] share_group`), each with its own client id; the verification processes
are split between them so that all of them together are ``workers``, as many
as the machine has cores (by default): more would only take turns on the same
cores.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core import batch, config, topics
from govedge.hub.gateways import Gateways
from govedge.tools.dev.bench_gateway import (TARGET_RATIO, _cpu_s, _firmware_modules, _peak_rss_kib, _signed, bench_devices,
                            verify_limit_per_s)
from govedge.tools.dev.broker import Mosquitto
from govedge.tools.dev.postgres import PostgresServer

STORES = ("sqlite", "postgresql")
GATEWAY = "gw-bench"
# the tables whose bytes per reading are reported one by one (with their indexes); the rest is in "total"
READING_TABLES = ("readings", "measurements")
STORED_LINE = re.compile(rf"batch {GATEWAY}/\S+: \d+ readings".encode())  # a hub's log line for a batch it stored


def bench_hub(store: str = "sqlite", hubs: list[int] | tuple[int, ...] = (1,), devices: int = 500,
              batches: int = 40, per_batch: int = 500, workers: int | None = None) -> dict:
    """The figures of the first number in ``hubs``; under "scaling", one entry for each.

    ``workers``: verification processes of all hub processes together (default: the service's default for one
    hub, one per core, at most four)."""
    if store not in STORES:
        raise ValueError(f"store must be one of {list(STORES)}, not {store!r}")
    if not hubs or min(hubs) < 1:
        raise ValueError(f"hubs must be one or more numbers of hub processes, each at least 1, not {hubs!r}")
    total_workers = config.workers("auto") if workers is None else workers
    reading = _firmware_modules()
    with tempfile.TemporaryDirectory(prefix="govedge-bench-hub-") as tmp:
        base = Path(tmp)
        keys = bench_devices(devices, base / "registry.json")
        gw_key = ec.generate_private_key(ec.SECP256R1())
        gateways = Gateways(path=base / "gateways.json")
        gateways.add(GATEWAY, gw_key.public_key())
        gateways.save()
        now = int(time.time())
        names = list(keys)
        total = batches * per_batch
        messages = [_signed(reading, keys[names[i % devices]], names[i % devices], i // devices, now - total + i)
                    for i in range(total)]
        signed = [batch.sign(gw_key, GATEWAY, b, now, messages[b * per_batch:(b + 1) * per_batch], [])[0]
                  for b in range(batches)]
        server = PostgresServer(fsync=True).start() if store == "postgresql" else None
        try:
            runs = [_ingest(base, base / f"hubs-{count}-{i}", signed, total, server, split(total_workers, count))
                    for i, count in enumerate(hubs)]
        finally:
            if server is not None:
                server.stop()
    limit = verify_limit_per_s()
    first = runs[0]
    return {
        "store": store,
        "readings": total,
        "batches": batches,
        "devices": devices,
        "hubs": first["hubs"],
        "workers": sum(first["verify_workers"]),
        "readings_per_s": round(first["rate"], 1),
        "verify_limit_per_s": round(limit, 1),
        "ratio": round(first["rate"] / limit, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": first["rate"] / limit >= TARGET_RATIO,
        "rss_mb": first["rss_mb"],
        "main_cpu_us_per_reading": first["main_cpu_us"],
        "workers_cpu_us_per_reading": first["workers_cpu_us"],
        "store_cpu_us_per_reading": first["store_cpu_us"],
        "stored_readings": first["stored"],
        "bytes_per_reading": first["bytes_per_reading"],
        "scaling": [{
            "hubs": run["hubs"],
            "verify_workers": run["verify_workers"],
            "batches_per_hub": run["batches_per_hub"],
            "readings_per_s": round(run["rate"], 1),
            "ratio": round(run["rate"] / limit, 3),
            "main_cpu_us_per_reading": run["main_cpu_us"],
            "workers_cpu_us_per_reading": run["workers_cpu_us"],
            "store_cpu_us_per_reading": run["store_cpu_us"],
        } for run in runs],
    }


def split(workers: int, hubs: int) -> list[int]:
    """``workers`` verification processes shared out between ``hubs`` hub processes, as evenly as they go; a hub
    that gets none checks the device signatures in its own process (`verify_workers = 0`)."""
    return [workers // hubs + (1 if i < workers % hubs else 0) for i in range(hubs)]


def _ingest(base: Path, folder: Path, signed: list[bytes], total: int, server: PostgresServer | None,
            verify_workers: list[int]) -> dict:
    """One run: the batches through ``len(verify_workers)`` hub processes into a fresh store; its figures."""
    folder.mkdir()
    url = server.new_database() if server is not None else str(folder / "hub.db")
    with Mosquitto(folder / "broker", extra_config="max_queued_messages 0\n") as broker:
        hubs, logs = [], []
        try:
            for i, verify in enumerate(verify_workers, 1):
                (folder / f"hub-{i}.toml").write_text(
                    f"[hub]\nregistry = {json.dumps(str(base / 'registry.json'))}\n"
                    f"gateways = {json.dumps(str(base / 'gateways.json'))}\nverify_workers = {verify}\n"
                    f"[store]\nurl = {json.dumps(url)}\n"
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\nclient_id = "bench-hub-{i}"\n')
                logs.append(folder / f"hub-{i}.log")
                with open(logs[-1], "ab") as log:
                    hubs.append(subprocess.Popen([sys.executable, "-m", "govedge.tools.cli", "hub", "run", "--config",
                                                  str(folder / f"hub-{i}.toml")], stdout=log, stderr=log))
            for hub, log_path in zip(hubs, logs):
                deadline = time.monotonic() + 30
                while b"hub: subscribed" not in log_path.read_bytes():
                    if time.monotonic() > deadline or hub.poll() is not None:
                        raise RuntimeError("hub did not start: " + log_path.read_text()[-500:])
                    time.sleep(0.02)
            time.sleep(0.3)  # the subscriptions are in place at the broker
            db = _Store(url)
            pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-gateway")
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            cpu_before = [_cpu_s(hub.pid) for hub in hubs]
            store_before = sum(_cpu_s(server.pid())) if server is not None else 0.0
            start = time.time()
            for info in [pub.publish(topics.batch(GATEWAY), b, qos=1) for b in signed]:
                info.wait_for_publish(60)
            deadline = time.monotonic() + 300
            # the bench sees the last commit: its time, not the hub's clock at the start of the last transaction
            while db.count("batches") < len(signed):
                if time.monotonic() > deadline or any(hub.poll() is not None for hub in hubs):
                    raise RuntimeError("not every batch was stored: " + " | ".join(p.read_text()[-500:] for p in logs))
                time.sleep(0.01)
            end = time.time()
            cpu_after = [_cpu_s(hub.pid) for hub in hubs]
            store_after = sum(_cpu_s(server.pid())) if server is not None else 0.0
            rss_kib = sum(_peak_rss_kib(hub.pid) for hub in hubs)
            pub.loop_stop()
            pub.disconnect()
        finally:
            for hub in hubs:
                hub.terminate()
            for hub in hubs:
                hub.wait(20)
    try:
        stored, rejected = db.count("readings"), db.count("rejected")
        if stored != total or rejected:
            raise RuntimeError(f"{stored} of {total} readings stored, {rejected} batches rejected")
        on_disk = db.bytes_on_disk()
    finally:
        db.close()
    return {
        "hubs": len(hubs),
        "verify_workers": verify_workers,
        # how the broker shared the batches out: the hubs' own log lines
        "batches_per_hub": [len(STORED_LINE.findall(path.read_bytes())) for path in logs],
        "rate": total / (end - start),
        "rss_mb": round(rss_kib / 1024, 1),
        "main_cpu_us": round(sum(a[0] - b[0] for a, b in zip(cpu_after, cpu_before)) / total * 1e6, 1),
        "workers_cpu_us": round(sum(a[1] - b[1] for a, b in zip(cpu_after, cpu_before)) / total * 1e6, 1),
        # SQLite works inside the hub's main process (counted there); PostgreSQL in its own server
        "store_cpu_us": round((store_after - store_before) / total * 1e6, 1) if server is not None else None,
        "stored": stored,
        "bytes_per_reading": {name: round(size / stored, 1) for name, size in on_disk.items()},
    }


class _Store:
    """The bench's own connection to the hub's store (SQLite file or PostgreSQL URL): counts and sizes."""

    def __init__(self, url: str):
        self.postgresql = url.startswith("postgresql://")
        if self.postgresql:
            import psycopg

            self.db = psycopg.connect(url, autocommit=True)
        else:
            self.path = Path(url)
            self.db = sqlite3.connect(self.path, isolation_level=None)

    def count(self, table: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def bytes_on_disk(self) -> dict[str, int]:
        """Bytes of each of READING_TABLES with its indexes, and "total": the whole store. SQLite: the pages of
        the table and its indexes (dbstat), and the file with its WAL after a checkpoint. PostgreSQL:
        pg_total_relation_size (table, indexes, TOAST) of the table and of its partitions if it has any, and of
        every table of the store's schema."""
        if self.postgresql:
            # pg_partition_tree lists nothing for a table without partitions: the table itself is added
            sizes = {table: self.db.execute(
                f"SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM (SELECT '{table}'::regclass AS relid "
                f"UNION SELECT relid FROM pg_partition_tree('{table}')) tree").fetchone()[0]
                for table in READING_TABLES}
            sizes["total"] = self.db.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()[0]
            return {name: int(size) for name, size in sizes.items()}
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes = {table: self.db.execute("SELECT coalesce(sum(d.pgsize), 0) FROM dbstat d JOIN sqlite_schema s "
                                        "ON s.name = d.name WHERE s.tbl_name = ?", (table,)).fetchone()[0]
                 for table in READING_TABLES}
        wal = self.path.with_name(self.path.name + "-wal")
        sizes["total"] = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return sizes

    def close(self) -> None:
        self.db.close()


def main_json(**kw) -> str:
    return json.dumps(bench_hub(**kw), indent=2)
