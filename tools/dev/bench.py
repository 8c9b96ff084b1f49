"""Benchmarks: `govedge bench firmware --json`.

Figures come from the real interpreters: the node's code compiled with mpy-cross
and run by the MicroPython unix port, and the same source run by CPython. Each
run prints one JSON object; docs/BENCHMARKS.md records what they gave.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

from govedge.tools.field import firmware
from govedge.tools.dev import sim
from govedge.tools.dev.sim import bme280_sim
from govedge.tools.dev.broker import Mosquitto

# targets from docs/BENCHMARKS.md
FIRMWARE_TARGETS = {"sign_ms": 3.0, "message_bytes": 160, "min_heap_kib": 48, "mpy_kib": 64,
                    "cycle_heap_kib": 64}

# RFC 6979 appendix A.2.5 private key: a fixed, public key for repeatable figures
BENCH_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
BENCH_DEVICE = "esp32-0007"
BENCH_TIME = 1764300000
# seq above 2**16 so the sequence number takes its full 5 bytes, as after weeks of service
BENCH_SEQ = 100000

# Runs unchanged under MicroPython and CPython: sign and encode one BME280
# reading per round, time each round with the interpreter's own clock.
_SIGN_SCRIPT = """
import time
import reading
try:
    ticks = time.ticks_us
    diff = time.ticks_diff
except AttributeError:
    ticks = lambda: time.perf_counter_ns() // 1000
    diff = lambda a, b: a - b
ROUNDS = %(rounds)d
msg = None
reading.p256.prepare()  # builds the comb table once, as a node does at boot
times = []
for i in range(ROUNDS):
    t0 = ticks()
    msg = reading.signed_reading(%(key)d, %(device)r, %(seq)d + i, %(time)d,
        [("temp", "Cel", (2153 + i, -2)), ("hum", "%%RH", (4820 + i, -2)), ("press", "Pa", 100812 + i)])
    times.append(diff(ticks(), t0))
times.sort()
print("RESULT", times[len(times) // 2], len(msg))
"""

# One full sign-and-encode cycle from a cold start, nothing else.
_CYCLE_SCRIPT = """
import reading
msg = reading.signed_reading(%(key)d, %(device)r, %(seq)d, %(time)d,
    [("temp", "Cel", (2153, -2)), ("hum", "%%RH", (4820, -2)), ("press", "Pa", 100812)])
print("OK", len(msg))
"""


def _params(rounds: int = 0) -> dict:
    return dict(key=BENCH_KEY, device=BENCH_DEVICE, seq=BENCH_SEQ, time=BENCH_TIME, rounds=rounds)


def _result(proc, interpreter: str) -> tuple[float, int]:
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, median_us, size = line.split()
            return int(median_us) / 1000.0, int(size)
    raise RuntimeError(f"{interpreter} benchmark failed: {proc.stderr.decode(errors='replace').strip()}")


def _cycle_ok(path: list[Path], heap_kib: int) -> bool:
    proc = firmware.run_micropython(_CYCLE_SCRIPT % _params(), path=path, heap_kib=heap_kib)
    return proc.returncode == 0 and proc.stdout.startswith(b"OK ")


def min_heap_kib(path: list[Path], high: int = 128) -> int:
    """Smallest `micropython -X heapsize=` (KiB) from which on the sign-and-encode cycle succeeds."""
    return _lowest_from_above(lambda heap: _cycle_ok(path, heap), high, "the sign-and-encode cycle")


# A full node cycle as on a board: boot, read the simulated BME280, sign, encode,
# store in the flash buffer, publish with QoS 1 to a real Mosquitto, PUBACK, and
# the gateway's acknowledgement (from _Acknowledger) read in.
_NODE_CYCLE_SCRIPT = """
import sys, config
cfg = config.load("config.json")
key = config.load_key(cfg["key_file"])
del config, sys.modules["config"]
import node, board_sim
n = node.Node(board_sim, cfg, key)
n.run(cycles=1)
n.await_acks(5000)
print("CYCLE", n.seq.next, len(n.buffer.pending))
"""


class _Acknowledger:
    """Stands in for the gateway: acknowledges every node message on the device's ack topic."""

    def __init__(self, port: int):
        import paho.mqtt.client as paho

        from govedge.core import topics, wire

        def on_message(client, userdata, msg):
            r = wire.decode_unverified(bytes(msg.payload))
            client.publish(topics.ack(r.device_id), topics.ack_payload(r.seq), qos=1)

        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-gateway")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(topics.ALL_READINGS, 1), (topics.ALL_STATUS, 1)])
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _board_folder(root: Path, port: int) -> Path:
    from govedge.tools.field.provision import provision

    provision("esp32-0007", "esp32", ["bme280"], root / "registry.json", root / "devices",
              broker_host="127.0.0.1", broker_port=port)
    board = root / "devices" / "esp32-0007"
    cfg = json.loads((board / "config.json").read_text())
    cfg.update(board="sim", status_every=1000, interval_s=0.01)
    (board / "config.json").write_text(json.dumps(cfg))
    # the chip's registers after a measurement of 21.53 degC, 48.20 %RH, 100812 Pa; the
    # node reads them through its driver, as on a board (the chip's simulator stays out)
    chip = bme280_sim.BME280Sim()
    chip.set_environment(21.53, 48.2, 100812)
    (board / "sim.json").write_text(json.dumps({"bme280_registers": chip.register_image()}))
    return board


def cycle_heap_kib(build: Path, board: Path, high: int = 160) -> int:
    """Smallest heap (KiB) from which on, up to `high`, one node cycle ends with the reading acknowledged."""

    def ok(heap: int) -> bool:
        for name in ("seq.dat", "buffer.dat", "buffer.dat.sent"):
            (board / name).unlink(missing_ok=True)
        proc = firmware.run_micropython(_NODE_CYCLE_SCRIPT, path=[build, sim.DIR], heap_kib=heap, cwd=board)
        # the reading and the first status record signed, both acknowledged by the "gateway"
        return proc.returncode == 0 and b"CYCLE 2 0" in proc.stdout

    return _lowest_from_above(ok, high, "a node cycle")


def _lowest_from_above(ok, high: int, what: str) -> int:
    # MicroPython's conservative GC makes success near the limit depend on the heap's
    # layout, not only its size: step down until the first failure, so that every
    # size from the figure up works
    if not ok(high):
        raise RuntimeError(f"{what} fails even with a {high} KiB heap")
    heap = high
    while heap > 1 and ok(heap - 1):
        heap -= 1
    return heap


def bench_firmware(rounds: int = 201) -> dict:
    with tempfile.TemporaryDirectory(prefix="govedge-bench-") as tmp:
        mpy_dir = Path(tmp)
        firmware.compile_all(mpy_dir)
        sign_ms, size = _result(
            firmware.run_micropython(_SIGN_SCRIPT % _params(rounds), path=[mpy_dir]), "MicroPython"
        )
        sign_ms_cpython, size_cpython = _result(
            firmware.run_cpython(_SIGN_SCRIPT % _params(rounds)), "CPython"
        )
        if size != size_cpython:
            raise RuntimeError(f"MicroPython and CPython disagree on the message size: {size} != {size_cpython}")
        heap = min_heap_kib([mpy_dir])
        build = Path(tmp) / "esp32"
        files = firmware.build(build, board="esp32")
        mpy_kib = sum(p.stat().st_size for p in files) / 1024
        with Mosquitto(Path(tmp) / "broker") as broker:
            gateway = _Acknowledger(broker.port)
            try:
                cycle_kib = cycle_heap_kib(build, _board_folder(Path(tmp) / "node", broker.port))
            finally:
                gateway.close()
    version = firmware.micropython_version()
    figures = {
        "sign_ms": round(sign_ms, 3),
        "sign_ms_cpython": round(sign_ms_cpython, 3),
        "message_bytes": size,
        "min_heap_kib": heap,
        "mpy_kib": round(mpy_kib, 1),
        "cycle_heap_kib": cycle_kib,
    }
    return {
        **figures,
        "targets": FIRMWARE_TARGETS,
        "of_target": {k: round(figures[k] / v, 3) for k, v in FIRMWARE_TARGETS.items()},
        "meets_targets": all(figures[k] <= v for k, v in FIRMWARE_TARGETS.items()),
        "rounds": rounds,
        "micropython": version,
        "cpython": platform.python_version(),
        "machine": platform.machine(),
    }


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:18} {value}")
