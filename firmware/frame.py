# Serial framing for nodes wired to the gateway (UART or USB): a frame is
# COBS(message || CRC-32(message), 4 bytes little-endian) || 0x00. COBS is
# Cheshire & Baker, "Consistent Overhead Byte Stuffing", IEEE/ACM Transactions
# on Networking 7(2), 1999; CRC-32 is binascii.crc32 (ISO-HDLC, as zlib.crc32).
# The gateway's side is govedge.core.serialframe; docs/FORMAT.md "Serial framing".

import binascii
import struct

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

MAX_MESSAGE = const(4096)
_DELIMITER = const(0)


def encode(message):
    """The frame that carries message (1..MAX_MESSAGE bytes), delimiter included, as a bytearray."""
    n = len(message)
    if not 0 < n <= MAX_MESSAGE:
        raise ValueError("a serial frame carries 1 to %d bytes, not %d" % (MAX_MESSAGE, n))
    crc = struct.pack("<I", binascii.crc32(message))
    total = n + 4
    # first code byte + data + one code byte per forced 254-byte split + delimiter
    out = bytearray(total + 2 + (total - 1) // 254)
    code_at = 0  # where the current block's code byte goes
    code = 1  # 1 + the block's data bytes so far
    o = 1
    for i in range(total):
        b = message[i] if i < n else crc[i - n]
        if b:
            out[o] = b
            o += 1
            code += 1
            # a full block (code 0xFF) implies no zero after it; a new one starts only if data follows
            if code == 0xFF and i + 1 < total:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
        else:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    out[o] = _DELIMITER
    return out if o + 1 == len(out) else out[:o + 1]


def decode(body):
    """The message of one frame (without its 0x00), or None if COBS or CRC is broken.

    The node reads only the gateway's short acknowledgements this way.
    """
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        code = body[i]
        if code == 0 or i + code > n:  # a code byte and code - 1 data bytes must fit
            return None
        out.extend(body[i + 1:i + code])
        i += code
        if code < 0xFF and i < n:
            out.append(0)
    if len(out) < 5:
        return None
    msg = bytes(out[:-4])
    if struct.unpack("<I", out[-4:])[0] != binascii.crc32(msg) & 0xFFFFFFFF:
        return None
    return msg
