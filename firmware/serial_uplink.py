# Serial uplink for nodes wired to the gateway (UART or USB). Each message goes
# out in one frame (frame.py) as a kind byte (1 reading, 2 status) and the signed
# message; the gateway answers, once the message is committed on its disk, with
# a frame of 0x06 and the message's sequence number (8 bytes, big-endian), or,
# for a message it cannot read (it has kept it in its quarantine), 0x15 and the
# CRC-32 of the frame's message: either way the message is done with. Both
# sides put a 0x00 before every frame. Without an answer the message stays in
# the buffer and goes again.

import binascii

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

import frame
import clock

_ACK = const(0x06)
_REFUSED = const(0x15)


class Uplink:
    """Messages over uart; timeout_ms: how long the gateway has to acknowledge one."""

    def __init__(self, uart, log, timeout_ms=3000):
        self.uart = uart
        self.log = log
        self.timeout_ms = timeout_ms
        self.rx = bytearray()

    def send(self, kind, seq, msg):
        """True once the gateway has committed (or quarantined) the message; OSError otherwise."""
        # a 0x00 first: whatever noise the line picked up ends there, not in this frame
        self.uart.write(b"\x00")
        body = bytes((kind + 1,)) + msg
        self.uart.write(frame.encode(body))
        crc = binascii.crc32(body) & 0xFFFFFFFF
        start = clock.ticks_ms()
        while clock.ticks_diff(clock.ticks_ms(), start) < self.timeout_ms:
            answer = self._answer(seq, crc)
            if answer == _REFUSED:
                self.log("uplink", "the gateway refused message %d (it keeps it in its quarantine); going on" % seq)
            if answer:
                return True
            clock.sleep_ms(5)
        raise OSError("gateway did not acknowledge message %d within %d ms" % (seq, self.timeout_ms))

    def _answer(self, seq, crc):
        """_ACK or _REFUSED when the gateway answered this message, else None."""
        chunk = self.uart.read(64)
        if not chunk:  # MicroPython's UART gives None, pyserial b''
            return None
        self.rx.extend(chunk)
        while True:
            end = self.rx.find(b"\x00")
            if end < 0:
                if len(self.rx) > 64:  # noise without a delimiter: acks are short
                    self.rx = bytearray()
                return None
            body = self.rx[:end]
            self.rx = self.rx[end + 1:]
            msg = frame.decode(body) if body else None
            if msg and len(msg) == 9 and msg[0] == _ACK and int.from_bytes(msg[1:], "big") == seq:
                return _ACK
            if msg and len(msg) == 5 and msg[0] == _REFUSED and int.from_bytes(msg[1:], "little") == crc:
                return _REFUSED

    def acked(self):
        # the line answers each message in send(): nothing acknowledged later
        return None

    def close(self):
        pass
