# A Nova Fitness SDS011 at the byte level of its UART, after "Laser Dust Sensor
# Control Protocol V1.3": data frames once per interval while working and in
# active reporting mode, replies to commands, silence while asleep. The test
# can break the line: noise, bad checksums, truncated frames, a broken RX wire,
# no power. Runs under MicroPython and CPython; the pty helper at the end is
# for CPython only (a board's serial port is a pty there).

import time

HEAD = 0xAA
TAIL = 0xAB
DATA = 0xC0
REPLY = 0xC5
COMMAND = 0xB4
CMD_REPORTING_MODE = 0x02
CMD_QUERY_DATA = 0x04
CMD_SLEEP_WORK = 0x06
CMD_WORKING_PERIOD = 0x08

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
    _ticks_add = time.ticks_add
except AttributeError:  # CPython
    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


def _sensor_frame(kind, d1, d2, d3, d4, device_id):
    f = bytearray((HEAD, kind, d1, d2, d3, d4, device_id >> 8, device_id & 0xFF, 0, TAIL))
    f[8] = sum(f[2:8]) & 0xFF
    return bytes(f)


def data_frame(pm25, pm10, device_id=0xA160):
    """AA C0 PM2.5 lo hi, PM10 lo hi, ID1 ID2, checksum, AB; values in 0.1 ug/m3."""
    return _sensor_frame(DATA, pm25 & 0xFF, pm25 >> 8, pm10 & 0xFF, pm10 >> 8, device_id)


def reply_frame(cmd, d2, d3, device_id=0xA160, d4=0):
    return _sensor_frame(REPLY, cmd, d2, d3, d4, device_id)


def command_frame(cmd, d2=0, d3=0, device_id=0xFFFF):
    """AA B4, 15 data bytes (command, ..., ID1, ID2), checksum of the data bytes, AB."""
    f = bytearray(19)
    f[0], f[1], f[2], f[3], f[4] = HEAD, COMMAND, cmd, d2, d3
    f[15], f[16] = device_id >> 8, device_id & 0xFF
    f[17] = sum(f[2:17]) & 0xFF
    f[18] = TAIL
    return bytes(f)


class SDS011Sim:
    """One sensor. pm25 and pm10 (0.1 ug/m3) are what it measures; interval_ms is
    its reporting interval (1000 on a real one; None: frames only by emit()).
    Faults the test may set: unplugged (silent and deaf), deaf (its RX wire is
    broken: it sends but hears nothing), missed_wakes (wake commands a sleeping
    sensor misses). rx_size is the node UART's receive buffer: bytes beyond it
    are lost, as with a real UART, and counted in overrun."""

    def __init__(self, pm25=0, pm10=0, device_id=0xA160, interval_ms=1000, rx_size=256):
        self.pm25 = pm25
        self.pm10 = pm10
        self.device_id = device_id
        self.interval_ms = interval_ms
        self.rx_size = rx_size
        self.working = True
        self.query_mode = False
        self.period = 0
        self.unplugged = False
        self.deaf = False
        self.missed_wakes = 0
        self.out = bytearray()  # on the wire towards the node, not read yet
        self.overrun = 0
        self.commands = []  # every good command frame heard, as (cmd, data byte 2, data byte 3)
        self.bad_commands = 0
        self._in = bytearray()
        self._due = _ticks_add(_ticks_ms(), interval_ms or 0)

    # -- the wire towards the node ------------------------------------------------

    def _put(self, data):
        room = self.rx_size - len(self.out)
        if len(data) > room:
            self.overrun += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.out.extend(data)

    def _run(self):
        # the frames that came due since the last look, as the sensor's clock says
        if self.interval_ms is None or self.unplugged or not self.working or self.query_mode:
            return
        now = _ticks_ms()
        while _ticks_diff(now, self._due) >= 0:
            self._put(data_frame(self.pm25, self.pm10, self.device_id))
            self._due = _ticks_add(self._due, self.interval_ms)

    def pending(self):
        self._run()
        return len(self.out)

    def take(self, n):
        """Up to n bytes from the wire (b'' when none)."""
        self._run()
        data = bytes(self.out[:n])
        self.out = self.out[len(data):]
        return data

    def emit(self, count=1):
        """count data frames now, as a working sensor in active mode sends them."""
        if self.working and not self.unplugged and not self.query_mode:
            for _ in range(count):
                self._put(data_frame(self.pm25, self.pm10, self.device_id))

    def inject(self, data):
        """Raw bytes on the line (noise, a frame from elsewhere), after what is due."""
        self._run()
        self._put(data)

    def inject_bad_checksum(self, pm25=999, pm10=999):
        f = bytearray(data_frame(pm25, pm10, self.device_id))
        f[8] = (f[8] + 1) & 0xFF
        self.inject(f)

    def inject_truncated(self, keep=6, pm25=888, pm10=888):
        self.inject(data_frame(pm25, pm10, self.device_id)[:keep])

    # -- the wire from the node ---------------------------------------------------

    def hear(self, data):
        """Bytes the node wrote; each whole command frame is carried out."""
        if self.unplugged or self.deaf:
            return
        self._run()
        buf = self._in
        buf.extend(data)
        while True:
            i = buf.find(bytes((HEAD, COMMAND)))
            if i < 0:
                # keep a trailing 0xAA: it may be the head of the next command
                buf = buf[-1:] if buf[-1:] == bytes((HEAD,)) else bytearray()
                break
            if len(buf) - i < 19:
                buf = buf[i:]
                break
            frame = buf[i:i + 19]
            if frame[18] == TAIL and sum(frame[2:17]) & 0xFF == frame[17]:
                self._execute(frame)
                buf = buf[i + 19:]
            else:
                self.bad_commands += 1
                buf = buf[i + 1:]
        self._in = buf

    def _execute(self, c):
        cmd, d2, d3 = c[2], c[3], c[4]
        target = (c[15] << 8) | c[16]
        if target != 0xFFFF and target != self.device_id:
            return
        if not self.working:
            # asleep, the sensor hears only the command that wakes it, and may miss that
            if not (cmd == CMD_SLEEP_WORK and d2 == 1 and d3 == 1):
                return
            if self.missed_wakes:
                self.missed_wakes -= 1
                return
        self.commands.append((cmd, d2, d3))
        if cmd == CMD_SLEEP_WORK:
            if d2 == 1:
                if d3 == 1 and not self.working:
                    self._due = _ticks_add(_ticks_ms(), self.interval_ms or 0)
                self.working = d3 == 1
            self._put(reply_frame(cmd, d2, 1 if self.working else 0, self.device_id))
        elif cmd == CMD_REPORTING_MODE:
            if d2 == 1:
                self.query_mode = d3 == 1
                self._due = _ticks_add(_ticks_ms(), self.interval_ms or 0)
            self._put(reply_frame(cmd, d2, 1 if self.query_mode else 0, self.device_id))
        elif cmd == CMD_QUERY_DATA:
            self._put(data_frame(self.pm25, self.pm10, self.device_id))
        elif cmd == CMD_WORKING_PERIOD:
            if d2 == 1:
                self.period = d3
            self._put(reply_frame(cmd, d2, self.period, self.device_id))

    # -- UART faces ---------------------------------------------------------------

    def machine_uart(self, max_read=None):
        return MachineUART(self, max_read)

    def stream_uart(self):
        return StreamUART(self)


class StreamUART:
    """A UART without any(): read(n) returns what is there, None when nothing is."""

    def __init__(self, sim, max_read=None):
        self.sim = sim
        self.max_read = max_read  # at most this many bytes per read: frames arrive in pieces
        self.written = bytearray()

    def read(self, n=256):
        if self.max_read:
            n = min(n, self.max_read)
        return self.sim.take(n) or None

    def write(self, buf):
        self.written.extend(buf)
        self.sim.hear(bytes(buf))
        return len(buf)


class MachineUART(StreamUART):
    """machine.UART's read/write/any over the sim."""

    def any(self):
        return self.sim.pending()


def serve_pty(sim, fd, running, poll_s=0.005):
    """Connect the sim to the master side fd of a pty until running() is false (CPython).

    The node opens the pty's other side as its serial port."""
    import os
    import select

    while running():
        ready, _, _ = select.select([fd], [], [], poll_s)
        if ready:
            try:
                sim.hear(os.read(fd, 256))
            except OSError:  # the other side closed
                return
        data = sim.take(256)
        if data:
            os.write(fd, data)


class NodeSensor:
    """The simulated board's SDS011: our driver over this simulated sensor; world() sets pm2_5 and pm10."""

    def __init__(self, spec, world):
        import sds011

        self.world = world
        self.sim = SDS011Sim(interval_ms=spec.get("sim_interval_ms", 1000))
        self._update()
        self.driver = sds011.SDS011(self.sim.machine_uart())

    def _update(self):
        w = self.world()
        self.sim.pm25 = int(w.get("pm2_5", 12.3) * 10 + 0.5)
        self.sim.pm10 = int(w.get("pm10", 20.1) * 10 + 0.5)
        self.sim.unplugged = bool(w.get("sds011_unplugged"))

    def wake(self):
        self._update()
        self.driver.wake()

    def sleep(self):
        self.driver.sleep()

    def measurements(self):
        self._update()
        return self.driver.measurements()
