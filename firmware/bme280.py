# Bosch BME280 temperature, humidity and pressure sensor on I2C, read in forced
# mode: one measurement per call, the chip asleep in between. The bus is handed
# in (machine.I2C on boards, anything with readfrom_mem/writeto_mem in tests).
# Section numbers refer to the BME280 datasheet (BST-BME280-DS002).

import struct

try:
    from micropython import const
except ImportError:  # CPython (the Raspberry Pi node): const() of an integer is the integer
    const = int

from clock import sleep_ms

_CHIP_ID = const(0x60)

# registers, datasheet section 5.3 (memory map)
_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: dig_T1..dig_P9, one reserved byte, dig_H1
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_DATA = const(0xF7)  # 0xF7..0xFE: press, temp (20 bits each), hum (16 bits)

_RESET_WORD = const(0xB6)  # section 5.4.2
_STATUS_MEASURING = const(0x08)  # section 5.4.4
_STATUS_IM_UPDATE = const(0x01)
_MODE_FORCED = const(0x01)  # section 5.4.5
_OVERSAMPLING = (1, 2, 4, 8, 16)  # register codes 1..5, section 5.4.3 and 5.4.5


class SensorError(Exception):
    """The BME280 is missing, is another chip, or does not finish; the message says which and where."""


def _code(factor):
    if factor not in _OVERSAMPLING:
        raise ValueError("BME280 oversampling must be 1, 2, 4, 8 or 16, not %r" % (factor,))
    return _OVERSAMPLING.index(factor) + 1


class BME280:
    """BME280(machine.I2C(...), 0x76).measurements() -> [(name, unit, value)]; oversampling 1..16x."""

    def __init__(self, i2c, address=0x76, osrs_t=1, osrs_p=1, osrs_h=1):
        self.i2c = i2c
        self.address = address
        self._ctrl_hum = _code(osrs_h)
        self._ctrl_meas = (_code(osrs_t) << 5) | (_code(osrs_p) << 2) | _MODE_FORCED
        # maximum measurement time in ms, datasheet section 9.1 (appendix B)
        self._max_ms = (1250 + 2300 * (osrs_t + osrs_p + osrs_h) + 575 + 575 + 999) // 1000
        self._buf = bytearray(1)
        self._lost = "BME280 not found at 0x%02x: %s"  # what a bus error means until the chip has answered
        chip_id = self._read(_REG_ID, 1)[0]
        if chip_id != _CHIP_ID:
            raise SensorError("chip id 0x%02x at 0x%02x is not a BME280 (0x%02x)" % (chip_id, address, _CHIP_ID))
        self._write(_REG_RESET, _RESET_WORD)
        sleep_ms(2)  # start-up time, section 1 (table 1)
        self._wait(_STATUS_IM_UPDATE, 10, "reset")
        self._read_calibration()
        self._lost = "BME280 at 0x%02x stopped answering: %s"

    def _read(self, reg, n):
        try:
            return self.i2c.readfrom_mem(self.address, reg, n)
        except OSError as exc:
            raise SensorError(self._lost % (self.address, exc))

    def _write(self, reg, value):
        self._buf[0] = value
        try:
            self.i2c.writeto_mem(self.address, reg, self._buf)
        except OSError as exc:
            raise SensorError(self._lost % (self.address, exc))

    def _wait(self, bit, ms, what):
        # poll the status register about once a millisecond, for at most ms
        for _ in range(ms + 1):
            if not self._read(_REG_STATUS, 1)[0] & bit:
                return
            sleep_ms(1)
        raise SensorError("BME280 at 0x%02x: %s did not finish within %d ms" % (self.address, what, ms))

    def _read_calibration(self):
        # trimming parameters, datasheet section 4.2.2 (table 16)
        tp = self._read(_REG_CALIB_TP, 26)
        self._tp = struct.unpack_from("<HhhHhhhhhhhh", tp)
        h2, h3, e4, e5, e6, h6 = struct.unpack("<hBbBbb", self._read(_REG_CALIB_H, 7))
        # dig_H4 = 0xE4[7:0] . 0xE5[3:0], dig_H5 = 0xE6[7:0] . 0xE5[7:4], both signed 12 bits
        self._h = (tp[25], h2, h3, (e4 << 4) | (e5 & 0x0F), (e6 << 4) | (e5 >> 4), h6)

    def measure(self):
        """One forced-mode measurement: (0.01 degC, Pa in Q24.8, %RH in Q22.10)."""
        # ctrl_hum takes effect only with the next write of ctrl_meas, section 5.4.3
        self._write(_REG_CTRL_HUM, self._ctrl_hum)
        self._write(_REG_CTRL_MEAS, self._ctrl_meas)
        self._wait(_STATUS_MEASURING, self._max_ms, "measurement")
        d = self._read(_REG_DATA, 8)  # burst read keeps the three values of one measurement, section 4
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = self._tp
        h1, h2, h3, h4, h5, h6 = self._h

        # BME280_compensate_T_int32, section 4.2.3 (Python >> is arithmetic, as the C code intends)
        var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
        var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
        t_fine = var1 + var2
        t = (t_fine * 5 + 128) >> 8

        # BME280_compensate_P_int64, section 4.2.3
        var1 = t_fine - 128000
        var2 = var1 * var1 * p6
        var2 = var2 + ((var1 * p5) << 17)
        var2 = var2 + (p4 << 35)
        var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
        var1 = (((1 << 47) + var1) * p1) >> 33
        if var1 == 0:
            raise SensorError("BME280 at 0x%02x: pressure calibration is zero" % self.address)
        p = 1048576 - adc_p
        p = ((p << 31) - var2) * 3125
        p = p // var1 if (p < 0) == (var1 < 0) else -(-p // var1)  # C division truncates toward zero
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (p8 * p) >> 19
        p = ((p + var1 + var2) >> 8) + (p7 << 4)

        # bme280_compensate_H_int32, section 4.2.3
        v = t_fine - 76800
        v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
            ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14)
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
        v = 0 if v < 0 else 419430400 if v > 419430400 else v
        return t, p, v >> 12

    def measurements(self):
        """[(name, unit, value)] as docs/FORMAT.md names them: 0.01 degC, 0.01 %RH, 1 Pa."""
        t, p, h = self.measure()
        # round half up: Q22.10 to hundredths, Q24.8 to whole Pa
        return [("temp", "Cel", (t, -2)), ("hum", "%RH", ((h * 100 + 512) >> 10, -2)),
                ("press", "Pa", (p + 128) >> 8)]
