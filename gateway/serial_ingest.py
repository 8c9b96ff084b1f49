"""Serial ingest: nodes wired to the gateway (UART or USB serial), one thread per port.

Each good frame (govedge.core.serialframe; docs/FORMAT.md, "Serial framing") of kind 01
(reading) or 02 (status) goes into the gateway's inbox as an Inbound, like a message
from MqttIngest; its ack writes the 06 frame with the message's sequence number, which
the gateway calls only after the message is committed. A port that goes away (a USB
adapter pulled out) is logged once and opened again every few seconds.
"""

from __future__ import annotations

import binascii
import logging
import queue
import threading
from collections import Counter
from typing import Callable

import serial

from govedge.core import serialframe, wire

from .ingest import Inbound

log = logging.getLogger("govedge.gateway")

KINDS = {1: "reading", 2: "status"}  # the kind byte in front of the signed message
ACK = b"\x06"
# a message with no sequence number to acknowledge (it does not decode) is refused by the CRC-32 of
# its frame's message: the node drops it and goes on with the next (docs/FORMAT.md, "Serial framing")
REFUSED = b"\x15"
IDLE = b"\x00"  # sent before every frame: noise on the line ends here, not in the frame
READ_TIMEOUT_S = 0.1
WRITE_TIMEOUT_S = 1.0  # an ack must never hang the gateway's commit loop on a stuck port
REOPEN_S = 3.0

# the Deframer's counters, as the gateway's counters call them
DEFRAMER_COUNTERS = {
    "frames_ok": "serial_frames",
    "frames_bad_crc": "serial_bad_crc",
    "frames_bad_cobs": "serial_bad_cobs",
    "frames_too_long": "serial_too_long",
    "bytes_discarded": "serial_bytes_discarded",
}

# several ports share the gateway's counters; `counter[k] += n` is not atomic across threads
_counters_lock = threading.Lock()


class SerialIngest:
    """One serial port's nodes: frames in, Inbound items out, acks back after commit."""

    def __init__(self, port: str, baud: int, inbox: "queue.Queue[Inbound]", counters: Counter,
                 reopen_s: float = REOPEN_S, on_state: Callable[[str, bool], None] | None = None):
        self.port = port
        self.on_state = on_state or (lambda state, ok: None)  # for `govedge gateway status`
        self.baud = baud
        self.inbox = inbox
        self.counters = counters
        self.reopen_s = reopen_s
        # One lock over the open port: the reader thread takes it to put a port in place or
        # take it away (close), acks take it to write. Reads run outside it, on the reader
        # thread's own reference, as pyserial allows one reader and one writer at a time
        # (miniterm works so); holding it across a 0.1 s read would hold back every ack.
        self._lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the service ---------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial-ingest {self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        outage = False  # a port that is away is logged when it goes, not at every try to reopen it
        opened = False
        while not self._stopping.is_set():
            try:
                port = serial.Serial(self.port, self.baud, timeout=READ_TIMEOUT_S,
                                     write_timeout=WRITE_TIMEOUT_S, exclusive=True)
            except (serial.SerialException, OSError) as exc:
                if not outage:
                    outage = True
                    self._count("serial_port_errors")
                    log.error("serial %s: cannot open (%s); trying again every %g s", self.port, exc, self.reopen_s)
                    self.on_state(f"{self.port} cannot be opened ({exc})", False)
                self._stopping.wait(self.reopen_s)
                continue
            log.info("serial %s: %s at %d baud", self.port, "open again" if opened else "open", self.baud)
            self.on_state(f"{self.port} open at {self.baud} baud", True)
            outage, opened = False, True
            with self._lock:
                self._serial = port
            try:
                self._receive(port)
            except (serial.SerialException, OSError) as exc:
                outage = True
                self._count("serial_port_errors")
                log.error("serial %s: port lost (%s); trying to reopen every %g s", self.port, exc, self.reopen_s)
                self.on_state(f"{self.port} lost ({exc}), reopening", False)
            except Exception:  # a fault of ours must not end the thread: the port's nodes would go unheard
                outage = True
                self._count("serial_ingest_faults")
                log.exception("serial %s: ingest fault; reopening the port in %g s", self.port, self.reopen_s)
            finally:
                with self._lock:
                    self._serial = None
                    try:
                        port.close()
                    except (serial.SerialException, OSError):
                        pass  # the device is gone already: nothing left to close
            if outage:
                self._stopping.wait(self.reopen_s)
        log.info("serial %s: closed", self.port)

    def _receive(self, port: serial.Serial) -> None:
        """Read until stopped or the port fails; a fresh Deframer per opening (a frame cut by
        an unplug is counted with the discarded bytes, not as a bad frame)."""
        deframer = serialframe.Deframer()
        seen = dict.fromkeys(DEFRAMER_COUNTERS, 0)
        unknown_kind_logged = False
        try:
            while not self._stopping.is_set():
                data = port.read(port.in_waiting or 1)
                if not data:
                    continue
                for message in deframer.feed(data):
                    name = KINDS.get(message[0])
                    if name is None:
                        self._count("serial_bad_kind")
                        if not unknown_kind_logged:  # a chatty device must not flood the log
                            unknown_kind_logged = True
                            log.warning("serial %s: frame of unknown kind 0x%02x dropped (further ones only "
                                        "counted in serial_bad_kind)", self.port, message[0])
                        continue
                    payload = bytes(message[1:])
                    self.inbox.put(Inbound(f"serial:{self.port}/{name}", payload,
                                                   self._ack_for(bytes(message))))
                seen = self._count_deframer(deframer, seen)
        finally:
            self._count_deframer(deframer, seen)
            if deframer.buffered:
                self._count("serial_bytes_discarded", deframer.buffered)

    # -- acknowledgements ------------------------------------------------------------

    def _ack_for(self, message: bytes) -> Callable[[], None]:
        """What the gateway sends once the frame's message (kind byte and signed message) is committed:
        the acknowledgement of its sequence number or, when it has none, its refusal."""
        try:
            seq = wire.decode_unverified(message[1:]).seq
        except Exception:  # noqa: BLE001 - undecodable: quarantined by the verify stage, refused here
            crc = binascii.crc32(message).to_bytes(4, "little")
            frame = IDLE + serialframe.encode(REFUSED + crc)
            return lambda: self._write_ack(f"refusal of the message with CRC-32 {crc[::-1].hex()}", frame)
        frame = IDLE + serialframe.encode(ACK + seq.to_bytes(8, "big"))
        return lambda: self._write_ack(f"acknowledgement of message {seq}", frame)

    def _write_ack(self, what: str, frame: bytes) -> None:
        # Written to the port as it is now: after an unplug and replug the node behind it
        # may still wait for this ack, and one for a message it no longer holds is ignored.
        with self._lock:
            port = self._serial
            try:
                if port is None:
                    raise serial.SerialException("port not open")
                port.write(frame)
                return
            except (serial.SerialException, OSError) as exc:
                reason = exc
        # called from the gateway's commit loop: a lost ack is counted, never raised there
        self._count("serial_acks_unsent")
        log.warning("serial %s: %s not sent (%s); the node will send it again", self.port, what, reason)

    # -- counters ------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with _counters_lock:
            self.counters[name] += n

    def _count_deframer(self, deframer: serialframe.Deframer, seen: dict) -> dict:
        now = deframer.counters()
        with _counters_lock:
            for key, name in DEFRAMER_COUNTERS.items():
                if now[key] != seen[key]:
                    self.counters[name] += now[key] - seen[key]
        return now
