# The node: every interval, read the sensors, sign one reading, keep it in the
# offline buffer, and send what the gateway does not have yet, oldest first.
# The same code runs on every board; what differs lives in board_<name>.py,
# which provides: sensor(name, spec), seq_store(path), uplink(cfg, log) (an
# object with send(kind, seq, msg) -> True when the gateway has the message
# already (serial), False when its acknowledgement comes later; acked() -> the
# acknowledgements (payloads, docs/FORMAT.md) that came since the last call, or
# None, without waiting; close(); both raise OSError when the link failed),
# watchdog(seconds), mem_free(), vsupply_mv(cfg), network_up(cfg, log),
# sync_time(cfg, log), deep_sleep(ms).

import gc
import os

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

import clock
import reading
from buffer import Buffer
from counter import Sequence

_READING = const(0)  # kinds of message: the uplink sends each where its kind belongs
_STATUS = const(1)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_RESYNC_MS = const(3600000)  # ask NTP again every hour
_ACK_WAIT_MAX_MS = const(600000)  # unanswered rounds wait longer, up to 10 min (unless ack_timeout_s is longer)
_SLEEP_ACK_MS = const(5000)  # a deep-sleep node waits at most this long for its ack: battery

_boot = clock.ticks_ms()


def log(tag, text):
    # one line per event, with seconds since boot; never key material
    t = clock.ticks_diff(clock.ticks_ms(), _boot)
    print("[%7d.%03d] %s: %s" % (t // 1000, t % 1000, tag, text))


class Node:
    def __init__(self, board, cfg, key):
        self.board = board
        self.cfg = cfg
        self.device_id = cfg["device_id"]
        self.key = key  # the private scalar; never printed
        reading.p256.prepare()  # 4 KiB in one piece: take it before anything fragments the heap
        self.seq = Sequence(board.seq_store("seq.dat"), cfg["seq_block"])
        b = cfg["buffer"]
        self.buffer = Buffer("buffer.dat", b["slots"], b["slot_bytes"])
        if self.buffer.corrupt:
            log("buffer", "%d damaged slots ignored (power loss during a write)" % self.buffer.corrupt)
        gc.collect()  # the buffer's scan left garbage: the uplink's code fills its holes, not fresh heap
        self.uplink = board.uplink(cfg, log)
        self.sensors = {}
        self.errors = {}
        self.last_error = None
        self.cycles = 0
        self.backoff_ms = 0
        self.delivered_once = False
        self.retry_at = clock.ticks_ms()
        # the gateway acknowledges what it committed: a message sent stays in the buffer, and is
        # not sent again on this connection, until its ack comes or ack_timeout_s passes
        self.sent_upto = -1  # sending goes on above this seq; -1: all unacknowledged again
        self.ack_base_ms = int(cfg["ack_timeout_s"] * 1000)
        self.ack_wait_ms = self.ack_base_ms
        self.ack_since = clock.ticks_ms()  # when the oldest message in flight started waiting
        self.backlog = -1  # the newest seq a failure left waiting: "buffer sent" once it is acknowledged
        self.synced_at = None
        self.wdt = None
        log("node", "%s up: seq from %d, %d messages waiting in the buffer"
            % (self.device_id, self.seq.next, len(self.buffer.pending)))

    # -- sensors ------------------------------------------------------------

    def measure(self):
        values = []
        for name in sorted(self.cfg["sensors"]):
            try:
                spec = self.cfg["sensors"][name]
                sensor = self.sensors.get(name)
                if sensor is None:
                    sensor = self.sensors[name] = self.board.sensor(name, spec)
                warmup = spec.get("warmup_s")
                if warmup:  # duty cycling (SDS011): air through the chamber first, then off again
                    sensor.wake()
                    self.pause(int(warmup * 1000))
                    values.extend(sensor.measurements())
                    sensor.sleep()
                else:
                    values.extend(sensor.measurements())
                if name in self.errors:
                    log("sensor", "%s working again" % name)
                    del self.errors[name]
            except Exception as exc:  # a sensor fault must never stop the node
                self.sensors[name] = None  # open it afresh next cycle
                text = "%s: %s" % (name, exc)
                if self.errors.get(name) != text:
                    log("sensor", text)
                self.errors[name] = self.last_error = text
        return values

    # -- signing and buffering ------------------------------------------------

    def sign(self, kind, measurements):
        seq = self.seq.take()
        msg = reading.signed_reading(self.key, self.device_id, seq, clock.unix_time(), measurements)
        self.buffer.put(kind, seq, msg)
        return seq

    def status(self):
        s = [("health", None, "degraded" if self.errors else "ok"),
             ("uptime", "s", clock.ticks_diff(clock.ticks_ms(), _boot) // 1000),
             ("buffer_pending", "count", len(self.buffer.pending)),
             ("buffer_dropped", "count", self.buffer.dropped),
             ("time_set", None, clock.unix_time() is not None)]
        free = self.board.mem_free()
        if free is not None:
            s.append(("heap_free", "B", free))
        mv = self.board.vsupply_mv(self.cfg)
        if mv is not None:
            s.append(("vsupply", "V", (mv, -3)))
        if self.last_error:
            s.append(("error", None, self.last_error[:60]))
        return s

    # -- sending ------------------------------------------------------------------

    def flush(self):
        """Send waiting messages oldest first and take in the gateway's acks;
        False when the link failed."""
        if clock.ticks_diff(clock.ticks_ms(), self.retry_at) < 0:
            return False
        progress = False
        try:
            # publish() reads acks too: they wait in the uplink until the next flush
            for payload in self.uplink.acked() or ():
                # "a" or "a-b", comma-separated: every committed number is named (docs/FORMAT.md)
                for part in payload.split(b","):
                    r = part.split(b"-")
                    try:
                        self.acknowledged(int(r[0]), int(r[-1]))
                    except ValueError:  # not the gateway's words: forget nothing for it
                        pass
            while True:
                item = self.buffer.after(self.sent_upto)
                if item is None:
                    break
                kind, seq, msg = item
                if not self.waiting():  # nothing was in flight: the ack clock starts now
                    self.ack_since = clock.ticks_ms()
                done = self.uplink.send(kind, seq, msg)
                self.sent_upto = seq
                if done:
                    self.acknowledged(seq, seq)
                progress = True
                self.feed()
        except Exception as exc:  # OSError from the link; nothing else (MemoryError) may stop the node
            # acks of this connection are lost with it: all unacknowledged go again on the next
            self.sent_upto = -1
            # a link that took something is alive: try again soon; a dead one, ever later
            self.backoff_ms = _BACKOFF_MIN_MS if progress else min(
                _BACKOFF_MAX_MS, max(_BACKOFF_MIN_MS, 2 * self.backoff_ms))
            # jitter, so that nodes cut off together do not come back together
            self.backoff_ms += self.backoff_ms * os.urandom(1)[0] // 1024
            self.retry_at = clock.ticks_add(clock.ticks_ms(), self.backoff_ms)
            log("uplink", "%s; %d waiting, next try in %d s"
                % (exc, len(self.buffer.pending), self.backoff_ms // 1000))
            self.backlog = self.seq.next - 1
            self.buffer.save_cursor()
            return False
        self.backoff_ms = 0
        if self.waiting() and clock.ticks_diff(clock.ticks_ms(), self.ack_since) >= self.ack_wait_ms:
            log("uplink", "no acknowledgement from the gateway for %d s; %d messages go again"
                % (self.ack_wait_ms // 1000, len(self.buffer.pending)))
            self.sent_upto = -1
            # the gateway may be down or slow: repeated rounds without progress wait ever longer
            self.ack_wait_ms = max(self.ack_base_ms, min(_ACK_WAIT_MAX_MS, 2 * self.ack_wait_ms))
            self.backlog = self.seq.next - 1
        pending = self.buffer.pending
        if self.backlog >= 0 and (not pending or pending[0][0] > self.backlog):
            log("uplink", "buffer sent")
            self.backlog = -1
        return True

    def waiting(self):
        """Whether a message sent on this connection waits for the gateway's ack."""
        pending = self.buffer.pending
        return bool(pending) and pending[0][0] <= self.sent_upto

    def acknowledged(self, first, last):
        """The gateway has committed the messages first..last: they leave the buffer."""
        pending = self.buffer.pending
        oldest = pending[0][0] if pending else None
        lowest = self.buffer.delivered(last, first)
        if lowest is None:
            return  # a repeated ack: nothing new
        if lowest == oldest:
            # the oldest is through; acks of newer ones alone leave its clock running, so
            # that one a broker lost between them goes again after ack_timeout_s
            self.ack_since = clock.ticks_ms()
            self.ack_wait_ms = self.ack_base_ms
        if not self.delivered_once:  # once per boot: the technician (and govedge flash) see it work
            self.delivered_once = True
            log("uplink", "first message delivered (#%d)" % lowest)

    def await_acks(self, ms):
        """Before deep sleep: give the gateway up to ms to acknowledge what was sent; what it
        did not stays in the buffer for the next wake-up."""
        start = clock.ticks_ms()
        while self.waiting() and clock.ticks_diff(clock.ticks_ms(), start) < ms and self.flush():
            self.feed()
            clock.sleep_ms(20)

    def feed(self):
        if self.wdt:
            self.wdt.feed()

    def pause(self, ms):
        """Wait, keeping the watchdog fed."""
        start = clock.ticks_ms()
        while clock.ticks_diff(clock.ticks_ms(), start) < ms:
            self.feed()
            clock.sleep_ms(min(200, max(0, ms - clock.ticks_diff(clock.ticks_ms(), start))))

    def keep_time(self):
        now = clock.ticks_ms()
        if self.synced_at is None or clock.ticks_diff(now, self.synced_at) > _RESYNC_MS:
            if self.board.network_up(self.cfg, log) and self.board.sync_time(self.cfg, log):
                self.synced_at = now

    # -- the loop -----------------------------------------------------------------

    def cycle(self):
        # a collection per cycle keeps the garbage of the last one from fragmenting the heap
        gc.collect()
        self.cycles += 1
        self.keep_time()
        before = dict(self.errors)
        values = self.measure()
        if values:
            self.sign(_READING, values)
        if (self.cycles - 1) % self.cfg["status_every"] == 0 or self.errors != before:
            self.sign(_STATUS, self.status())
        self.flush()

    def run(self, cycles=None):
        self.wdt = self.board.watchdog(self.cfg["watchdog_s"])
        interval_ms = int(self.cfg["interval_s"] * 1000)
        while cycles is None or self.cycles < cycles:
            start = clock.ticks_ms()
            try:
                self.cycle()
            except Exception as exc:  # keep measuring; the status record carries the fault
                self.last_error = "node: %r" % exc
                log("node", "cycle failed: %r" % exc)
            self.feed()
            if self.cfg["deep_sleep"]:
                self.await_acks(min(self.ack_base_ms, _SLEEP_ACK_MS))
                self.buffer.save_cursor()
                self.uplink.close()
                log("node", "deep sleep for %d ms" % interval_ms)
                self.board.deep_sleep(interval_ms)
            while clock.ticks_diff(clock.ticks_ms(), start) < interval_ms:
                if self.buffer.pending:
                    self.flush()
                left = interval_ms - clock.ticks_diff(clock.ticks_ms(), start)
                clock.sleep_ms(max(0, min(left, 200)))
                self.feed()
        self.buffer.save_cursor()
