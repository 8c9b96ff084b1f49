# The offline buffer: signed messages wait here, in flash, until the gateway has
# them. A fixed file of `slots` slots of `slot_bytes` each, written round-robin;
# each slot is a 16-byte header (magic, kind, length, sequence number, CRC-32)
# and the message. On boot the slots are scanned: entries with a bad CRC (a
# write cut by a power loss) are ignored. A message stays here until the
# gateway has acknowledged it (committed on its disk), not when the broker has
# it. What the gateway acknowledged is kept as a cursor (one above the highest
# sequence number acknowledged) in a FileCounter; it is
# written lazily, so a reboot may send a few messages again, which the
# gateway recognises by their sequence numbers. When the buffer is full the
# oldest unsent message is overwritten and counted in `dropped`.

import binascii
import struct

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

from counter import FileCounter, durable

_MAGIC = const(0xB5)
_HEADER = const(16)  # magic(1) kind(1) length(2) seq(8) crc32(4)


def _crc(head12, msg):
    return binascii.crc32(msg, binascii.crc32(head12)) & 0xFFFFFFFF


class Buffer:
    def __init__(self, path, slots=256, slot_bytes=256, cursor_path=None, cursor_every=8):
        self.path = path
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.dropped = 0
        self.corrupt = 0
        self.cursor = FileCounter(cursor_path or path + ".sent")
        self.cursor_every = cursor_every
        self._unsaved = 0
        self.sent = self.cursor.load()  # messages with seq < sent are delivered
        self.pending = []  # [seq, slot], oldest first
        self.pos = 0
        self._open()

    def _open(self):
        size = self.slots * self.slot_bytes
        try:
            f = open(self.path, "r+b")
        except OSError:
            f = open(self.path, "w+b")
        with f:
            f.seek(0, 2)
            have = f.tell()
            if have < size:  # new or shorter: extend with empty slots, one slot at a time
                blank = bytes(self.slot_bytes)
                for _ in range((size - have + self.slot_bytes - 1) // self.slot_bytes):
                    f.write(blank)
            newest = -1
            for i in range(self.slots):
                f.seek(i * self.slot_bytes)
                head = f.read(_HEADER)
                if head[0] != _MAGIC:
                    continue
                length = struct.unpack(">H", head[2:4])[0]
                seq = struct.unpack(">Q", head[4:12])[0]
                if length > self.slot_bytes - _HEADER:
                    self.corrupt += 1
                    continue
                msg = f.read(length)
                if struct.unpack(">I", head[12:16])[0] != _crc(head[:12], msg):
                    self.corrupt += 1
                    continue
                if seq > newest:
                    newest, self.pos = seq, (i + 1) % self.slots
                if seq >= self.sent:
                    self.pending.append([seq, i])
        self.pending.sort()

    def put(self, kind, seq, msg):
        """Store msg (kind: 0 reading, 1 status) before it is sent."""
        if len(msg) > self.slot_bytes - _HEADER:
            raise ValueError("message of %d bytes does not fit a %d-byte slot" % (len(msg), self.slot_bytes))
        slot = self.pos
        for i, entry in enumerate(self.pending):
            if entry[1] == slot:  # the oldest unsent message lives here
                self.pending.pop(i)
                self.dropped += 1
                break
        head = struct.pack(">BBHQ", _MAGIC, kind, len(msg), seq)
        with open(self.path, "r+b") as f:
            f.seek(slot * self.slot_bytes)
            f.write(head + struct.pack(">I", _crc(head, msg)) + msg)
            durable(f)
        self.pending.append([seq, slot])
        self.pos = (slot + 1) % self.slots

    def oldest(self):
        """(kind, seq, msg) of the oldest unacknowledged message, or None."""
        return self.after(-1)

    def after(self, above):
        """(kind, seq, msg) of the oldest waiting message numbered above `above`, or None."""
        for seq, slot in self.pending:
            if seq > above:
                break
        else:
            return None
        with open(self.path, "rb") as f:
            f.seek(slot * self.slot_bytes)
            head = f.read(_HEADER)
            msg = f.read(struct.unpack(">H", head[2:4])[0])
        return head[1], seq, msg

    def delivered(self, last, first=0):
        """The gateway has committed the messages numbered first..last (both inclusive);
        the lowest of them that was waiting, or None."""
        pending = self.pending
        lowest = top = None
        i = 0
        while i < len(pending) and pending[i][0] <= last:
            if pending[i][0] >= first:
                top = pending.pop(i)[0]
                if lowest is None:
                    lowest = top
            else:
                i += 1
        if lowest is None:
            return None
        # the cursor stays at the oldest message still waiting: a reboot sends that one again
        self.sent = pending[0][0] if pending else max(self.sent, top + 1)
        self._unsaved += 1
        if not pending or self._unsaved >= self.cursor_every:
            self.save_cursor()
        return lowest

    def save_cursor(self):
        if self._unsaved:
            self.cursor.save(self.sent)
            self._unsaved = 0
