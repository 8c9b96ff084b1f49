# A number that survives power loss: two 16-byte slots in one file, each
# b"GC" + 2 spare bytes + value (8 bytes) + CRC-32 of the first 12 bytes. A
# write goes to the slot not holding the newest value, so a write cut short
# by a power cut leaves the previous value readable. The value only grows.

import binascii
import os
import struct


def durable(f):
    # CPython on an SD card: push the write to the card; littlefs on the
    # MicroPython boards commits when the file is closed
    f.flush()
    if hasattr(os, "fsync"):
        os.fsync(f.fileno())


def _encode(value):
    body = b"GC\x00\x00" + struct.pack(">Q", value)
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def _decode(rec):
    if len(rec) != 16 or rec[:2] != b"GC":
        return None
    if struct.unpack(">I", rec[12:])[0] != binascii.crc32(rec[:12]) & 0xFFFFFFFF:
        return None
    return struct.unpack(">Q", rec[4:12])[0]


class FileCounter:
    def __init__(self, path):
        self.path = path
        self.slot = 0  # the slot holding the newest value
        self.value = 0
        try:
            with open(path, "rb") as f:
                data = f.read(32)
        except OSError:
            data = b""
        best = None
        for i in (0, 1):
            v = _decode(data[16 * i:16 * i + 16])
            if v is not None and (best is None or v > best):
                best, self.slot = v, i
        if best is not None:
            self.value = best
        else:
            with open(path, "wb") as f:
                f.write(_encode(0) + _encode(0))
                durable(f)

    def load(self):
        return self.value

    def save(self, value):
        if value < self.value:
            raise ValueError("counter %s cannot go back" % self.path)
        other = 1 - self.slot
        with open(self.path, "r+b") as f:
            f.seek(16 * other)
            f.write(_encode(value))
            durable(f)
        self.slot, self.value = other, value


class Sequence:
    """Sequence numbers that never repeat and never go back, across reboots.

    The store holds a high-water mark: every number below it may have been
    used. Numbers are taken from blocks reserved ahead, one write per block;
    a reboot skips the rest of the block.
    """

    def __init__(self, store, block=16):
        self.store = store
        self.block = block
        self.next = store.load()
        self.limit = self.next

    def take(self):
        if self.next >= self.limit:
            self.limit = self.next + self.block
            self.store.save(self.limit)
        seq = self.next
        self.next += 1
        return seq
