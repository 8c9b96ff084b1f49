# ESP32 (MicroPython): I2C and UART from machine, sequence numbers in NVS,
# Wi-Fi, NTP, watchdog, deep sleep. Pins come from config.json, which
# provisioning fills from hardware/pins/esp32.json.

import esp32
import machine

from mqtt import Uplink
from wifi import network_up, sync_time  # noqa: F401 (part of the board interface)


def sensor(name, spec):
    if name == "bme280":
        import bme280
        i2c = machine.I2C(spec["i2c"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                          freq=spec.get("freq", 100000))
        return bme280.BME280(i2c, spec.get("address", 0x76))
    if name == "sds011":
        import sds011
        uart = machine.UART(spec["uart"], baudrate=9600, tx=spec["tx"], rx=spec["rx"], timeout=100)
        return sds011.SDS011(uart)
    raise ValueError("no driver for sensor %r" % name)


class NvsCounter:
    # NVS commits are atomic: a power cut leaves the old or the new value
    def __init__(self, key):
        self.nvs = esp32.NVS("govedge")
        self.key = key
        buf = bytearray(8)
        try:
            self.nvs.get_blob(key, buf)
            self.value = int.from_bytes(buf, "big")
        except OSError:
            self.value = 0

    def load(self):
        return self.value

    def save(self, value):
        self.nvs.set_blob(self.key, value.to_bytes(8, "big"))
        self.nvs.commit()
        self.value = value


def seq_store(path):
    return NvsCounter("seq")


def uplink(cfg, log):
    if cfg["transport"] == "serial":
        import serial_uplink
        s = cfg["serial"]
        return serial_uplink.Uplink(machine.UART(s["uart"], baudrate=s.get("baud", 115200),
                                                 tx=s["tx"], rx=s["rx"], timeout=100), log)
    return Uplink(cfg, log)


def watchdog(seconds):
    return machine.WDT(timeout=seconds * 1000)


def mem_free():
    import gc
    return gc.mem_free()


def vsupply_mv(cfg):
    v = cfg.get("vsupply")
    if not v:
        return None
    adc = machine.ADC(machine.Pin(v["adc_pin"]))
    adc.atten(machine.ADC.ATTN_11DB)
    return int(adc.read_uv() * v.get("divider", 1.0) / 1000)


def deep_sleep(ms):
    machine.deepsleep(ms)
