# Raspberry Pi Pico W (MicroPython): I2C and UART from machine, sequence
# numbers in a file (littlefs writes are power-safe and counter.py keeps two
# slots), Wi-Fi, NTP, watchdog (at most 8.3 s on the RP2040), deep sleep.

import machine
from micropython import const

import mqtt
from counter import FileCounter
from wifi import network_up, sync_time  # noqa: F401 (part of the board interface)

_WDT_MAX_MS = const(8388)
_MQTT_TIMEOUT_S = const(5)  # below the watchdog's limit


def sensor(name, spec):
    if name == "bme280":
        import bme280
        i2c = machine.I2C(spec["i2c"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                          freq=spec.get("freq", 100000))
        return bme280.BME280(i2c, spec.get("address", 0x76))
    if name == "sds011":
        import sds011
        uart = machine.UART(spec["uart"], baudrate=9600, tx=machine.Pin(spec["tx"]),
                            rx=machine.Pin(spec["rx"]), timeout=100)
        return sds011.SDS011(uart)
    raise ValueError("no driver for sensor %r" % name)


def seq_store(path):
    return FileCounter(path)


def uplink(cfg, log):
    if cfg["transport"] == "serial":
        import serial_uplink
        s = cfg["serial"]
        return serial_uplink.Uplink(machine.UART(s["uart"], baudrate=s.get("baud", 115200),
                                                 tx=machine.Pin(s["tx"]), rx=machine.Pin(s["rx"]),
                                                 timeout=100), log)
    return mqtt.Uplink(cfg, log, timeout_s=_MQTT_TIMEOUT_S)


def watchdog(seconds):
    return machine.WDT(timeout=min(seconds * 1000, _WDT_MAX_MS))


def mem_free():
    import gc
    return gc.mem_free()


def vsupply_mv(cfg):
    v = cfg.get("vsupply")
    if not v:
        return None
    raw = machine.ADC(machine.Pin(v["adc_pin"])).read_u16()
    return int(raw * 3300 * v.get("divider", 1.0) / 65535)


def deep_sleep(ms):
    machine.deepsleep(ms)
