# The Raspberry Pi board module as it is, but for the BME280's I2C bus: the
# simulated chip's Blinka face is handed to the Pi's own driver in place of
# busio.I2C, so the node runs adafruit_bme280 and paho-mqtt for real under CPython.

import board_rpi
from board_rpi import *  # noqa: F401,F403 (the board interface)

import board_sim


def _simulated_i2c(spec):
    import bme280_sim

    w = board_sim.world()
    chip = bme280_sim.BME280Sim(address=spec.get("address", 0x76))
    chip.set_environment(w.get("temp", 21.5), w.get("hum", 48.0), w.get("press", 100800))
    return chip.blinka_bus()


def sensor(name, spec):
    if name == "bme280":
        return board_rpi.AdafruitBME280(_simulated_i2c(spec), spec.get("address", 0x76))
    return board_rpi.sensor(name, spec)
