# The Raspberry Pi board module as it is, with only the I2C bus swapped: Blinka's
# busio.I2C is replaced by the simulated chip's Blinka face, so the node runs
# adafruit_bme280 and paho-mqtt for real under CPython.

import board_rpi
from board_rpi import *  # noqa: F401,F403 (the board interface)

import board_sim


def _simulated_i2c(spec):
    import bme280_sim

    w = board_sim.world()
    chip = bme280_sim.BME280Sim(address=spec.get("address", 0x76))
    chip.set_environment(w.get("temp", 21.5), w.get("hum", 48.0), w.get("press", 100800))
    return chip.blinka_bus()


board_rpi.open_i2c = _simulated_i2c
