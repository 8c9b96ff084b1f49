# A Bosch BME280 at register level: the only simulated part of a sensor board.
# Register map, reset, forced mode and status follow the BME280 datasheet
# (BST-BME280-DS002); the chip's physics is the datasheet's double-precision
# compensation (section 8.1) solved for the raw value. Runs under MicroPython
# and CPython. Two bus faces over the same chip: machine.I2C (what our driver
# uses on boards) and busio.I2C (what Adafruit's driver uses through Blinka).

import sys

CHIP_ID = 0x60
REG_CALIB_TP = 0x88  # 0x88..0xA1
REG_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB_H = 0xE1  # 0xE1..0xE7
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # 0xF7..0xFE
RESET_WORD = 0xB6
SKIPPED_TP = 0x80000  # output of a skipped measurement, sections 5.4.3 and 5.4.5
SKIPPED_H = 0x8000

# the datasheet's names of the trimming parameters, table 16, with their ranges
FIELDS = (
    ("dig_T1", 0, 0xFFFF), ("dig_T2", -0x8000, 0x7FFF), ("dig_T3", -0x8000, 0x7FFF),
    ("dig_P1", 0, 0xFFFF), ("dig_P2", -0x8000, 0x7FFF), ("dig_P3", -0x8000, 0x7FFF),
    ("dig_P4", -0x8000, 0x7FFF), ("dig_P5", -0x8000, 0x7FFF), ("dig_P6", -0x8000, 0x7FFF),
    ("dig_P7", -0x8000, 0x7FFF), ("dig_P8", -0x8000, 0x7FFF), ("dig_P9", -0x8000, 0x7FFF),
    ("dig_H1", 0, 0xFF), ("dig_H2", -0x8000, 0x7FFF), ("dig_H3", 0, 0xFF),
    ("dig_H4", -0x800, 0x7FF), ("dig_H5", -0x800, 0x7FF), ("dig_H6", -0x80, 0x7F),
)

# a real chip's trimming parameters, as published in the tests of elixir-sensors/bmp280
DEFAULT_CALIBRATION = {
    "dig_T1": 28189, "dig_T2": 26285, "dig_T3": 50,
    "dig_P1": 36635, "dig_P2": -10696, "dig_P3": 3024, "dig_P4": 11092, "dig_P5": -241,
    "dig_P6": -7, "dig_P7": 12300, "dig_P8": -12000, "dig_P9": 5000,
    "dig_H1": 75, "dig_H2": 338, "dig_H3": 0, "dig_H4": 370, "dig_H5": 60, "dig_H6": 30,
}


def _enodev():
    # what machine.I2C raises when no device acknowledges: "[Errno 19] ENODEV" on both
    if sys.implementation.name == "micropython":
        return OSError(19)
    return OSError(19, "ENODEV")


def _nvm_image(cal):
    """The calibration registers 0x88..0xA1 and 0xE1..0xE7 holding cal, per table 16."""
    for name, lo, hi in FIELDS:
        if not lo <= cal[name] <= hi:
            raise ValueError("%s = %d is outside %d..%d" % (name, cal[name], lo, hi))
    tp = bytearray()
    for name, _, _ in FIELDS[:12]:
        v = cal[name]
        tp.append(v & 0xFF)
        tp.append((v >> 8) & 0xFF)
    tp.append(0)  # 0xA0 is not used
    tp.append(cal["dig_H1"])
    h2, h4, h5 = cal["dig_H2"], cal["dig_H4"], cal["dig_H5"]
    # dig_H4 is 0xE4[7:0] (bits 11:4) and 0xE5[3:0]; dig_H5 is 0xE5[7:4] (bits 3:0) and 0xE6[7:0]
    h = bytes((h2 & 0xFF, (h2 >> 8) & 0xFF, cal["dig_H3"], (h4 >> 4) & 0xFF,
               (h4 & 0x0F) | ((h5 & 0x0F) << 4), (h5 >> 4) & 0xFF, cal["dig_H6"] & 0xFF))
    return bytes(tp), h


def _solve(f, target, lo, hi):
    # the integer x in lo..hi whose f(x) is nearest target, for a monotonic f
    rising = f(hi) > f(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi


class BME280Sim:
    """One chip. The test sets adc_T, adc_P, adc_H (or set_environment) and the faults:
    unplugged (every transfer raises OSError 19), chip_id (a different chip),
    stuck (a started measurement never finishes). writes logs every register write."""

    def __init__(self, address=0x76, calibration=None, chip_id=CHIP_ID):
        self.address = address
        self.chip_id = chip_id
        self.calibration = dict(DEFAULT_CALIBRATION)
        if calibration:
            self.calibration.update(calibration)
        self._nvm = _nvm_image(self.calibration)
        self.unplugged = False
        self.stuck = False
        self.busy_reads = 1  # status reads that still see "measuring" after a start
        self.copy_reads = 1  # status reads that still see "im_update" after a reset
        self.writes = []
        self.measurement_count = 0
        self.set_environment(20.0, 50.0, 101325)
        self.power_on()

    # -- the chip ------------------------------------------------------------------

    def power_on(self):
        """Power-on reset, section 5.4.2: registers to their reset values, calibration copied from NVM."""
        r = self.regs = bytearray(256)
        tp, h = self._nvm
        r[REG_CALIB_TP:REG_CALIB_TP + len(tp)] = tp
        r[REG_CALIB_H:REG_CALIB_H + len(h)] = h
        r[REG_ID] = self.chip_id
        r[REG_DATA] = r[REG_DATA + 3] = r[REG_DATA + 6] = 0x80
        self._pointer = 0
        self._osrs_h = 0  # ctrl_hum as latched by the last write of ctrl_meas
        self._busy = 0
        self._copying = self.copy_reads

    def _store(self, reg, value):
        self.writes.append((reg, value))
        if reg == REG_RESET:
            if value == RESET_WORD:
                self.power_on()
        elif reg == REG_CTRL_HUM:
            self.regs[reg] = value & 0x07
        elif reg == REG_CONFIG:
            self.regs[reg] = value & 0xFD  # the IIR filter and standby time are not simulated
        elif reg == REG_CTRL_MEAS:
            self.regs[reg] = value
            self._osrs_h = self.regs[REG_CTRL_HUM]  # section 5.4.3
            mode = value & 0x03
            if mode == 0x01 or mode == 0x02:  # forced mode, section 3.3.2
                self._busy = max(self.busy_reads, 1 if self.stuck else 0)
                if not self._busy:
                    self._finish()
            elif mode == 0x03:
                self._convert()
        # every other register is read-only

    def _convert(self):
        osrs_t = (self.regs[REG_CTRL_MEAS] >> 5) & 0x07
        osrs_p = (self.regs[REG_CTRL_MEAS] >> 2) & 0x07
        p = self.adc_P if osrs_p else SKIPPED_TP
        t = self.adc_T if osrs_t else SKIPPED_TP
        h = self.adc_H if self._osrs_h else SKIPPED_H
        # sections 5.4.7 to 5.4.9: 20-bit values msb, lsb, xlsb[7:4]; humidity msb, lsb
        self.regs[REG_DATA:REG_DATA + 8] = bytes((
            (p >> 12) & 0xFF, (p >> 4) & 0xFF, (p << 4) & 0xF0,
            (t >> 12) & 0xFF, (t >> 4) & 0xFF, (t << 4) & 0xF0,
            (h >> 8) & 0xFF, h & 0xFF))
        self.measurement_count += 1

    def _finish(self):
        self._convert()
        self.regs[REG_CTRL_MEAS] &= 0xFC  # back to sleep mode

    def _load(self, reg):
        if reg != REG_STATUS:
            return self.regs[reg]
        status = (0x08 if self._busy else 0) | (0x01 if self._copying else 0)
        if self._copying:
            self._copying -= 1
        if self._busy and not self.stuck:
            self._busy -= 1
            if not self._busy:
                self._finish()
        return status

    # -- I2C transfers (section 6.2): a write sets the register pointer, then data
    # for that register, then (register, data) pairs; a read auto-increments.

    def i2c_write(self, data):
        if self.unplugged:
            raise _enodev()
        if not data:
            return
        self._pointer = data[0]
        if len(data) > 1:
            self._store(data[0], data[1])
        for i in range(2, len(data) - 1, 2):
            self._store(data[i], data[i + 1])

    def i2c_read(self, n):
        if self.unplugged:
            raise _enodev()
        if (self.regs[REG_CTRL_MEAS] & 0x03) == 0x03 and REG_DATA <= self._pointer:
            self._convert()  # normal mode: a fresh conversion is always there
        out = bytearray(n)
        for i in range(n):
            out[i] = self._load(self._pointer)
            self._pointer = (self._pointer + 1) & 0xFF
        return bytes(out)

    # -- the world the chip measures -------------------------------------------------

    def _t_fine(self, adc_t):
        c = self.calibration
        var1 = (adc_t / 16384.0 - c["dig_T1"] / 1024.0) * c["dig_T2"]
        var2 = (adc_t / 131072.0 - c["dig_T1"] / 8192.0) ** 2 * c["dig_T3"]
        return var1 + var2

    def _pressure(self, adc_p, t_fine):
        c = self.calibration
        var1 = t_fine / 2.0 - 64000.0
        var2 = var1 * var1 * c["dig_P6"] / 32768.0 + var1 * c["dig_P5"] * 2.0
        var2 = var2 / 4.0 + c["dig_P4"] * 65536.0
        var1 = (c["dig_P3"] * var1 * var1 / 524288.0 + c["dig_P2"] * var1) / 524288.0
        var1 = (1.0 + var1 / 32768.0) * c["dig_P1"]
        p = (1048576.0 - adc_p - var2 / 4096.0) * 6250.0 / var1
        return p + (c["dig_P9"] * p * p / 2147483648.0 + p * c["dig_P8"] / 32768.0 + c["dig_P7"]) / 16.0

    def _humidity(self, adc_h, t_fine):
        c = self.calibration
        x = t_fine - 76800.0
        h = (adc_h - (c["dig_H4"] * 64.0 + c["dig_H5"] / 16384.0 * x)) * (
            c["dig_H2"] / 65536.0 * (1.0 + c["dig_H6"] / 67108864.0 * x * (1.0 + c["dig_H3"] / 67108864.0 * x)))
        h = h * (1.0 - c["dig_H1"] * h / 524288.0)
        return 0.0 if h < 0 else 100.0 if h > 100 else h

    def set_environment(self, temp, hum, press):
        """Raw values that read as temp degC, hum %RH and press Pa through this chip's calibration."""
        self.adc_T = _solve(lambda x: self._t_fine(x) / 5120.0, temp, 0, 0xFFFFF)
        t_fine = int(self._t_fine(self.adc_T))
        self.adc_P = _solve(lambda x: self._pressure(x, t_fine), press, 0, 0xFFFFF)
        self.adc_H = _solve(lambda x: self._humidity(x, t_fine), hum, 0, 0xFFFF)

    def register_image(self):
        """The register map after a finished forced measurement, as hex: a chip in a steady world."""
        self._store(REG_CTRL_HUM, 0x01)
        self._store(REG_CTRL_MEAS, 0x25)  # x1 oversampling, forced mode
        while self._busy:
            self._load(REG_STATUS)
        self._copying = 0
        regs = bytearray(self.regs)
        regs[REG_STATUS] = 0
        return bytes(regs).hex()

    # -- bus faces -------------------------------------------------------------------

    def micropython_bus(self):
        return MachineI2C(self)

    def blinka_bus(self):
        return BusioI2C(self)


class MachineI2C:
    """The machine.I2C methods the firmware uses, with chips on it."""

    def __init__(self, *chips):
        self.chips = chips

    def _chip(self, addr):
        for chip in self.chips:
            if chip.address == addr and not chip.unplugged:
                return chip
        raise _enodev()

    def scan(self):
        return [c.address for c in self.chips if not c.unplugged]

    def readfrom_mem(self, addr, memaddr, nbytes):
        chip = self._chip(addr)
        chip.i2c_write(bytes((memaddr,)))
        return chip.i2c_read(nbytes)

    def writeto_mem(self, addr, memaddr, buf):
        self._chip(addr).i2c_write(bytes((memaddr,)) + bytes(buf))


class BusioI2C(MachineI2C):
    """The busio.I2C methods adafruit_bus_device uses; like CircuitPython, they need the lock."""

    def __init__(self, *chips):
        MachineI2C.__init__(self, *chips)
        self.locked = False

    def try_lock(self):
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self):
        self.locked = False

    def _locked_chip(self, address):
        if not self.locked:
            raise RuntimeError("Function requires lock")
        return self._chip(address)

    def scan(self):
        if not self.locked:
            raise RuntimeError("Function requires lock")
        return MachineI2C.scan(self)

    def writeto(self, address, buffer, *, start=0, end=None):
        end = len(buffer) if end is None else end
        self._locked_chip(address).i2c_write(bytes(buffer[start:end]))

    def readfrom_into(self, address, buffer, *, start=0, end=None):
        end = len(buffer) if end is None else end
        data = self._locked_chip(address).i2c_read(end - start)
        for i in range(end - start):
            buffer[start + i] = data[i]

    def writeto_then_readfrom(self, address, buffer_out, buffer_in, *, out_start=0, out_end=None,
                              in_start=0, in_end=None):
        self.writeto(address, buffer_out, start=out_start, end=out_end)
        self.readfrom_into(address, buffer_in, start=in_start, end=in_end)


class NodeSensor:
    """The simulated board's BME280: our driver over this simulated chip; world() sets what it measures."""

    def __init__(self, spec, world):
        import bme280

        self.world = world
        self.chip = BME280Sim(address=spec.get("address", 0x76))
        self.chip.unplugged = bool(world().get("bme280_unplugged"))
        self.driver = bme280.BME280(self.chip.micropython_bus(), spec.get("address", 0x76))

    def measurements(self):
        w = self.world()
        self.chip.unplugged = bool(w.get("bme280_unplugged"))
        self.chip.set_environment(w.get("temp", 21.5), w.get("hum", 48.0), w.get("press", 100800))
        return self.driver.measurements()
