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


def sensor(name, spec):
    if name == "bme280":
        import bme280

        image = world().get("bme280_registers")
        if image:  # a chip in a steady world: its register map, fixed (benchmarks)
            import bme280_regs

            return bme280.BME280(bme280_regs.FixedRegisters(image), spec.get("address", 0x76))
        import bme280_sim

        return bme280_sim.NodeSensor(spec, world)
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

    return RadioLink(mqtt.Uplink(cfg, log))


class RadioLink:
    """The node's radio between it and the gateway: sim.json's "link_down" cuts it."""

    def __init__(self, uplink):
        self.uplink = uplink

    def send(self, kind, seq, msg):
        self._check()
        return self.uplink.send(kind, seq, msg)

    def acked(self):
        self._check()
        return self.uplink.acked()

    def _check(self):
        # a cut radio carries nothing either way: acks published meanwhile are lost
        if world().get("link_down"):
            self.uplink.close()
            raise OSError("radio link down (simulated)")

    def close(self):
        self.uplink.close()


def watchdog(seconds):
    return None


def mem_free():
    return gc.mem_free()


def vsupply_mv(cfg):
    # sim.json's "vsupply_mv": the supply voltage the board measures; without it, a board that measures none
    return world().get("vsupply_mv")


def network_up(cfg, log):
    return True


def sync_time(cfg, log):
    return clock.unix_time() is not None


def deep_sleep(ms):
    # a board wakes from deep sleep through a reset: here the process ends and the test starts it again
    raise SystemExit(0)
