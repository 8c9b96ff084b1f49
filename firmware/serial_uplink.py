# Serial uplink for nodes wired to the gateway (UART or USB). Each message goes
# out in one frame (frame.py) as a kind byte (1 reading, 2 status) and the signed
# message; the gateway answers, once the message is committed on its disk, with
# a frame of 0x06 and the message's sequence number (8 bytes, big-endian). Both
# sides put a 0x00 before every frame. Without the acknowledgement the message
# stays in the buffer and goes again.

import frame
import clock

ACK = 0x06
TIMEOUT_MS = 3000


class Uplink:
    def __init__(self, uart, log):
        self.uart = uart
        self.log = log
        self.rx = bytearray()

    def send(self, kind, seq, msg):
        # a 0x00 first: whatever noise the line picked up ends there, not in this frame
        self.uart.write(b"\x00")
        self.uart.write(frame.encode(bytes((kind + 1,)) + msg))
        start = clock.ticks_ms()
        while clock.ticks_diff(clock.ticks_ms(), start) < TIMEOUT_MS:
            if self._acked(seq):
                return
            clock.sleep_ms(5)
        raise OSError("gateway did not acknowledge message %d within %d ms" % (seq, TIMEOUT_MS))

    def _acked(self, seq):
        chunk = self.uart.read(64)
        if not chunk:  # MicroPython's UART gives None, pyserial b''
            return False
        self.rx.extend(chunk)
        while True:
            end = self.rx.find(b"\x00")
            if end < 0:
                if len(self.rx) > 64:  # noise without a delimiter: acks are short
                    self.rx = bytearray()
                return False
            body = self.rx[:end]
            self.rx = self.rx[end + 1:]
            msg = frame.decode(body) if body else None
            if msg and len(msg) == 9 and msg[0] == ACK and int.from_bytes(msg[1:], "big") == seq:
                return True

    def close(self):
        pass
