# Nova Fitness SDS011 particulate matter sensor on a UART (9600 baud, 8N1). The
# UART is handed in: machine.UART on boards, pyserial's Serial on a Linux node,
# anything with read(n)/write(buf) in tests. Frame layouts and commands follow
# Nova Fitness "Laser Dust Sensor Control Protocol V1.3" and the SDS011 datasheet V1.3.

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

from clock import sleep_ms, ticks_diff, ticks_ms

BAUDRATE = const(9600)

_HEAD = const(0xAA)
_TAIL = const(0xAB)
_DATA = const(0xC0)  # sensor to node: PM2.5 lo, hi, PM10 lo, hi, ID1, ID2, checksum, tail
_REPLY = const(0xC5)  # sensor to node: answer to a command, same layout
_COMMAND = const(0xB4)  # node to sensor: 15 data bytes (the last two the device id), checksum, tail
_FRAME = const(10)
_COMMAND_FRAME = const(19)

# commands, data byte 1; data byte 2 is 0 = query, 1 = set
_CMD_REPORTING_MODE = const(0x02)  # data byte 3: 0 = active (a frame every second), 1 = query
_CMD_QUERY_DATA = const(0x04)  # answered with a data frame
_CMD_SLEEP_WORK = const(0x06)  # data byte 3: 0 = sleep (fan and laser off), 1 = work
_SET = const(1)

ALL_DEVICES = const(0xFFFF)  # device id FFFF in a command: whichever sensor is on the line

_CHUNK = const(32)  # bytes taken from the UART per read
_POLL_MS = const(10)
_TRIES = const(3)  # a sleeping sensor may miss the first command: its MCU wakes on the first byte


class SensorError(Exception):
    pass


class SDS011:
    # reply_ms: how long a command waits for its answer, per try; the sensor answers
    # within a few ms when it hears the command
    def __init__(self, uart, device_id=ALL_DEVICES, reply_ms=1000):
        self.uart = uart
        self.device_id = device_id  # whom commands go to, and whose frames count
        self.sensor_id = None  # the id in the last frame heard
        self.pm25 = None  # last data frame, 0.1 ug/m3
        self.pm10 = None
        self.frames = 0  # good data frames
        self.bad_frames = 0  # a header, then a wrong checksum or tail (truncated, corrupted)
        self.skipped = 0  # bytes outside any good frame
        self.sleeping = False
        self.query_mode = False
        self.reply_ms = reply_ms
        # machine.UART has any(), pyserial in_waiting; with neither, the UART's own read timeout bounds a poll
        self._waiting = 1 if hasattr(uart, "any") else 2 if hasattr(uart, "in_waiting") else 0
        self._win = bytearray(_FRAME)  # a prefix of the frame being received
        self._n = 0
        self._cmd = bytearray(_COMMAND_FRAME)
        self._reply = bytearray(3)  # data bytes 1..3 of the last reply
        self._replied = False
        self._fresh = False

    # -- receiving ---------------------------------------------------------------

    def _poll(self):
        """Parse what the UART holds; the number of bytes taken."""
        u = self.uart
        n = _CHUNK
        if self._waiting == 1:
            n = min(u.any(), _CHUNK)
        elif self._waiting == 2:
            n = min(u.in_waiting, _CHUNK)
        if n <= 0:
            return 0
        data = u.read(n)  # None (machine.UART) or b'' (pyserial) when nothing came
        if not data:
            return 0
        win = self._win
        for b in data:
            win[self._n] = b
            self._n += 1
            self._scan()
        return len(data)

    def _scan(self):
        # The window holds what may be the start of a frame. When it cannot be, a
        # frame may still start at a later 0xAA inside it: resume there, so no good
        # frame after garbage or a broken frame is lost.
        win = self._win
        while self._n:
            n = self._n
            if win[0] == _HEAD and (n == 1 or win[1] == _DATA or win[1] == _REPLY):
                if n < _FRAME:
                    return
                s = 0
                for i in range(2, 8):
                    s += win[i]
                if win[9] == _TAIL and s & 0xFF == win[8]:
                    self._n = 0
                    self._frame()
                    return
                self.bad_frames += 1
            i = 1
            while i < n and win[i] != _HEAD:
                i += 1
            for j in range(i, n):
                win[j - i] = win[j]
            self._n = n - i
            self.skipped += i

    def _frame(self):
        win = self._win
        sensor_id = (win[6] << 8) | win[7]
        if self.device_id != ALL_DEVICES and sensor_id != self.device_id:
            self.skipped += _FRAME  # another sensor's frame
            return
        self.sensor_id = sensor_id
        if win[1] == _DATA:
            self.pm25 = win[2] | (win[3] << 8)
            self.pm10 = win[4] | (win[5] << 8)
            self.frames += 1
            self._fresh = True
        else:
            self._reply[0] = win[2]
            self._reply[1] = win[3]
            self._reply[2] = win[4]
            self._replied = True

    # -- commands ----------------------------------------------------------------

    def _send(self, cmd, d2, d3):
        c = self._cmd
        c[0] = _HEAD
        c[1] = _COMMAND
        c[2] = cmd
        c[3] = d2
        c[4] = d3
        for i in range(5, 15):
            c[i] = 0
        c[15] = self.device_id >> 8
        c[16] = self.device_id & 0xFF
        s = 0
        for i in range(2, 17):
            s += c[i]
        c[17] = s & 0xFF
        c[18] = _TAIL
        self.uart.write(c)

    def _command(self, cmd, d2, d3, what):
        """Send a command until the sensor's reply confirms it."""
        frames = self.frames
        for _ in range(_TRIES):
            self._replied = False
            self._send(cmd, d2, d3)
            start = ticks_ms()
            while ticks_diff(ticks_ms(), start) < self.reply_ms:
                if not self._poll():
                    sleep_ms(_POLL_MS)
                r = self._reply
                if self._replied and r[0] == cmd and r[1] == d2 and r[2] == d3:
                    return
        if self.frames > frames:
            raise SensorError("SDS011 sends data but did not answer the %s command in %d tries "
                              "— check the wire from the node's TX to the sensor's RX" % (what, _TRIES))
        raise SensorError("SDS011: no reply to the %s command within %d ms on UART "
                          "— check wiring and 5 V supply" % (what, _TRIES * self.reply_ms))

    def sleep(self):
        """Fan and laser off until wake(): duty cycling spares the laser and the battery."""
        self._command(_CMD_SLEEP_WORK, _SET, 0, "sleep")
        self.sleeping = True

    def wake(self):
        """Fan and laser on; give it about 30 s of airflow before a reading counts."""
        self._command(_CMD_SLEEP_WORK, _SET, 1, "work")
        self.sleeping = False

    def set_query_mode(self, on):
        """In query mode the sensor sends a frame only when read() asks for one."""
        self._command(_CMD_REPORTING_MODE, _SET, 1 if on else 0, "reporting mode")
        self.query_mode = on

    # -- measurements --------------------------------------------------------------

    def read(self, timeout_ms=3000):
        """The latest data frame that arrives within timeout_ms: (PM2.5, PM10) in 0.1 ug/m3."""
        self._fresh = False
        if self.query_mode:
            self._send(_CMD_QUERY_DATA, 0, 0)
        skipped = self.skipped
        bad = self.bad_frames
        start = ticks_ms()
        while True:
            got = self._poll()
            # drain the UART's backlog: its last frame is the newest
            if self._fresh and not got:
                return self.pm25, self.pm10
            if ticks_diff(ticks_ms(), start) >= timeout_ms:
                break
            if not got:
                sleep_ms(_POLL_MS)
        if self._fresh:
            return self.pm25, self.pm10
        text = "SDS011: no data frame within %d ms on UART — " % timeout_ms
        if self.sleeping:
            raise SensorError(text + "the sensor was put to sleep: wake() it first")
        noise = self.skipped + self._n - skipped
        if noise:
            raise SensorError(text + "%d bytes of noise, %d bad frames: check the baud rate (%d 8N1) and wiring"
                              % (noise, self.bad_frames - bad, BAUDRATE))
        raise SensorError(text + "check wiring and 5 V supply")

    def measurements(self, timeout_ms=3000):
        """[(name, unit, value)] as docs/FORMAT.md names them, in 0.1 ug/m3."""
        pm25, pm10 = self.read(timeout_ms)
        return [("pm2_5", "ug/m3", (pm25, -1)), ("pm10", "ug/m3", (pm10, -1))]
