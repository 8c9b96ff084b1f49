"""Serial framing on the host: the gateway's side of firmware/frame.py.

A frame is COBS(message || CRC-32(message), 4 bytes little-endian) followed by
one 0x00 (docs/FORMAT.md, "Serial framing"). COBS decoding is the PyPI package
`cobs`; CRC-32 is zlib's (the same as binascii.crc32 on the node).
"""

from __future__ import annotations

import zlib

from cobs import cobs

MAX_MESSAGE = 4096  # the same limit as firmware/frame.py; the tests hold the two together
CRC_SIZE = 4
DELIMITER = b"\x00"
# the longest COBS body a frame may have (the delimiter not counted)
MAX_FRAME = cobs.max_encoded_length(MAX_MESSAGE + CRC_SIZE)


def encode(message: bytes) -> bytes:
    """The frame of message, delimiter included (the node's firmware/frame.py makes the same bytes)."""
    if not 0 < len(message) <= MAX_MESSAGE:
        raise ValueError(f"a serial frame carries 1 to {MAX_MESSAGE} bytes, not {len(message)}")
    return cobs.encode(bytes(message) + zlib.crc32(message).to_bytes(CRC_SIZE, "little")) + DELIMITER


class Deframer:
    """Feed it the bytes of a serial line in any pieces; it returns the messages of good frames.

    Bad frames are dropped and counted, never raised: bad COBS, a CRC that does not
    match (a frame too short to hold one message byte and its CRC counts here too;
    a run of 0x00 alone is idle line, not a frame), or more than MAX_MESSAGE bytes.
    An over-long frame is discarded as it comes, so the buffer never holds more
    than MAX_FRAME bytes. Every dropped byte, delimiter included, counts in
    bytes_discarded. After any fault, the next 0x00 starts a fresh frame.
    """

    def __init__(self) -> None:
        self.frames_ok = 0
        self.frames_bad_crc = 0
        self.frames_bad_cobs = 0
        self.frames_too_long = 0
        self.bytes_discarded = 0
        self._buf = bytearray()
        self._discarding = False  # inside an over-long frame, until the next delimiter

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buf)

    def counters(self) -> dict[str, int]:
        return {
            "frames_ok": self.frames_ok,
            "frames_bad_crc": self.frames_bad_crc,
            "frames_bad_cobs": self.frames_bad_cobs,
            "frames_too_long": self.frames_too_long,
            "bytes_discarded": self.bytes_discarded,
        }

    def feed(self, data: bytes) -> list[bytes]:
        """The messages of the frames that data completes, in order."""
        messages = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            self._take(data[start:] if end < 0 else data[start:end])
            if end < 0:
                return messages
            message = self._finish()
            if message is not None:
                messages.append(message)
            start = end + 1

    def _take(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._discarding:
            self.bytes_discarded += len(chunk)
        elif len(self._buf) + len(chunk) > MAX_FRAME:
            self.frames_too_long += 1
            self.bytes_discarded += len(self._buf) + len(chunk)
            self._buf.clear()
            self._discarding = True
        else:
            self._buf += chunk

    def _finish(self) -> bytes | None:
        # a delimiter came: judge the frame it ends
        if self._discarding:
            self._discarding = False
            self.bytes_discarded += 1
            return None
        if not self._buf:
            return None  # idle line
        body = bytes(self._buf)
        self._buf.clear()
        try:
            payload = cobs.decode(body)
        except cobs.DecodeError:
            return self._drop(body, "frames_bad_cobs")
        if len(payload) > MAX_MESSAGE + CRC_SIZE:
            return self._drop(body, "frames_too_long")
        # crc32(b'') is 0: four 0x00 bytes would pass as an empty message, so a frame needs one byte
        message = payload[:-CRC_SIZE]
        if not message or zlib.crc32(message) != int.from_bytes(payload[-CRC_SIZE:], "little"):
            return self._drop(body, "frames_bad_crc")
        self.frames_ok += 1
        return message

    def _drop(self, body: bytes, counter: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        self.bytes_discarded += len(body) + 1
        return None
