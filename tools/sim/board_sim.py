# A board for the MicroPython unix port: the node's own code, with the chips
# simulated at register level and the world they measure read from sim.json
# in the board's folder (the test changes it while the node runs).

import gc
import json

import clock
from counter import FileCounter


def world():
    try:
        with open("sim.json") as f:
            return json.load(f)
    except OSError:
        return {}


if world().get("clock_unset"):
    clock.unix_time = lambda: None


class SimBME280:
    """Our BME280 driver over the simulated chip; the world sets the raw values."""

    def __init__(self, spec):
        import bme280

        image = world().get("bme280_registers")
        if image:  # a chip in a steady world: its register map, fixed (benchmarks)
            self.chip = None
            bus = FixedRegisters(image)
        else:
            import bme280_sim

            self.chip = bme280_sim.BME280Sim(address=spec.get("address", 0x76))
            self.chip.unplugged = bool(world().get("bme280_unplugged"))
            bus = self.chip.micropython_bus()
        self.driver = bme280.BME280(bus, spec.get("address", 0x76))

    def measurements(self):
        if self.chip:
            w = world()
            self.chip.unplugged = bool(w.get("bme280_unplugged"))
            self.chip.set_environment(w.get("temp", 21.5), w.get("hum", 48.0), w.get("press", 100800))
        return self.driver.measurements()


class FixedRegisters:
    """machine.I2C over a BME280 register map (hex) taken from bme280_sim after a measurement."""

    def __init__(self, image_hex):
        import binascii

        self.regs = binascii.unhexlify(image_hex)

    def readfrom_mem(self, addr, reg, n):
        return self.regs[reg:reg + n]

    def writeto_mem(self, addr, reg, buf):
        pass


def sensor(name, spec):
    if name == "bme280":
        return SimBME280(spec)
    if name == "sds011":
        import sds011_sim

        return sds011_sim.NodeSensor(spec, world)
    raise ValueError("no simulated %s on this board" % name)


def seq_store(path):
    return FileCounter(path)


def uplink(cfg, log):
    if cfg["transport"] == "serial":
        import pty_uart
        import serial_uplink

        return serial_uplink.Uplink(pty_uart.PtyUART(cfg["serial"]["port"]), log)
    import mqtt  # umqtt.simple: the MicroPython client

    return mqtt.Uplink(cfg, log)


def watchdog(seconds):
    return None


def mem_free():
    return gc.mem_free()


def vsupply_mv(cfg):
    return None


def network_up(cfg, log):
    return True


def sync_time(cfg, log):
    return clock.unix_time() is not None


def deep_sleep(ms):
    # a board wakes from deep sleep through a reset: here the process ends and the test starts it again
    raise SystemExit(0)
