"""`govedge demo`: what exists, run for real.

A node signs BME280 readings with the firmware's own code under the MicroPython
unix port; this host verifies them with the wire module; a tampered copy and a
message claiming another device are rejected; one reading is shown byte by byte.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization

from . import firmware, wire
from .annotate import annotate

DEVICE = "esp32-0001"

# The node side: reads its private scalar from stdin, simulates a BME280 in a
# room (slow drift, deterministic), signs each reading, prints it as hex.
_NODE_SCRIPT = """
import sys, time
import reading
d = int(sys.stdin.readline().strip(), 16)
count = %(count)d
reading.p256.prepare()
now = int(time.time())
for i in range(count):
    t = 2153 + 7 * i
    h = 4820 - 11 * i
    p = 100812 + 3 * i
    t0 = time.ticks_us()
    msg = reading.signed_reading(d, %(device)r, i + 1, now - 60 * (count - 1 - i),
        [("temp", "Cel", (t, -2)), ("hum", "%%RH", (h, -2)), ("press", "Pa", p)])
    us = time.ticks_diff(time.ticks_us(), t0)
    print(us, msg.hex())
"""


def _fmt_value(m: wire.Measurement) -> str:
    return f"{m.name} {m.value} {m.unit or ''}".rstrip()


def _when(t) -> str:
    if t is None:
        return "time unknown        "
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(message: bytes, keys) -> str:
    try:
        wire.verify(message, keys)
    except wire.WireError as exc:
        return f"rejected ({exc.code}): {exc.reason}"
    return "accepted"


def run(readings: int = 3, workdir: str | None = None) -> int:
    if readings < 1:
        print("govedge demo: --readings must be at least 1")
        return 2
    with tempfile.TemporaryDirectory(prefix="govedge-demo-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        return _run(readings, base)


def _run(count: int, base: Path) -> int:
    print("govchain-edge demo: readings signed by the node firmware under MicroPython, verified on this host\n")

    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value
    public = key.public_key()
    public_hex = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ).hex()
    registry = {DEVICE: [public]}

    def keys(device_id):
        return registry.get(device_id, [])

    mpy_dir = base / "firmware-esp32"
    compiled = firmware.build(mpy_dir, board="esp32")
    version = firmware.micropython_version()
    print(f"node {DEVICE}")
    print(f"  firmware   what an ESP32 gets: {len(compiled)} files compiled with mpy-cross "
          f"(umqtt.simple included), {sum(p.stat().st_size for p in compiled)} bytes; "
          f"run here by MicroPython {version} (unix port)")
    print(f"  key        new P-256 key; public {public_hex[:18]}...{public_hex[-8:]}; "
          "the private key goes to the node only")

    proc = firmware.run_micropython(
        _NODE_SCRIPT % {"count": count, "device": DEVICE},
        path=[mpy_dir],
        stdin=f"{scalar:064x}\n".encode(),
    )
    if proc.returncode != 0:
        print("node failed:\n" + proc.stderr.decode(errors="replace"))
        return 1
    lines = [line.split() for line in proc.stdout.decode().splitlines() if line.strip()]
    messages = [bytes.fromhex(h) for _, h in lines]
    micros = sorted(int(us) for us, _ in lines)
    print(f"  signed     {len(messages)} BME280 readings, {len(messages[0])} bytes each, "
          f"median {micros[len(micros) // 2] / 1000:.2f} ms to sign and encode one\n")

    print("host verifier (govedge.wire: cbor2 + cryptography)")
    accepted = 0
    for msg in messages:
        try:
            r = wire.verify(msg, keys)
        except wire.WireError as exc:
            print(f"  REJECTED {exc.code}: {exc.reason}")
            continue
        accepted += 1
        values = "   ".join(_fmt_value(m) for m in r.measurements)
        print(f"  {r.device_id} #{r.seq:<3} {_when(r.time)}   {values}   signature ok")

    print("\nwhat the verifier refuses")
    first = messages[0]
    pos = len(first) - 80  # a byte inside the payload
    tampered = bytearray(first)
    tampered[pos] ^= 0x01
    print(f"  reading #1 with byte {pos} changed "
          f"(0x{first[pos]:02x} -> 0x{tampered[pos]:02x}):  {_check(bytes(tampered), keys)}")
    forged = first.replace(DEVICE.encode(), b"esp32-0002")
    print(f"  reading #1 relabelled as esp32-0002:  {_check(forged, keys)}")
    print(f"  reading #1 cut short by one byte:  {_check(first[:-1], keys)}")

    print(f"\nreading #1 on the wire ({len(first)} bytes), see docs/FORMAT.md:")
    print(annotate(first))
    print(f"\n{accepted} of {len(messages)} readings verified")
    return 0 if accepted == len(messages) else 1
