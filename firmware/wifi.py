# Wi-Fi and NTP for the MicroPython boards that have them (ESP32, Pico W).

import network
import ntptime
import time

_wlan = None


def network_up(cfg, log):
    global _wlan
    if cfg["transport"] != "mqtt":
        return False
    if _wlan is None:
        _wlan = network.WLAN(network.STA_IF)
        _wlan.active(True)
    if _wlan.isconnected():
        return True
    w = cfg.get("wifi") or {}
    log("wifi", "joining %r" % w.get("ssid"))
    _wlan.connect(w.get("ssid"), w.get("password"))
    for _ in range(100):
        if _wlan.isconnected():
            log("wifi", "connected, address %s" % _wlan.ifconfig()[0])
            return True
        time.sleep_ms(100)
    log("wifi", "could not join %r (status %s)" % (w.get("ssid"), _wlan.status()))
    return False


def sync_time(cfg, log):
    ntptime.host = (cfg.get("ntp") or {}).get("host", "pool.ntp.org")
    try:
        ntptime.settime()
    except Exception as exc:
        log("time", "NTP from %s failed: %r" % (ntptime.host, exc))
        return False
    log("time", "clock set from %s" % ntptime.host)
    return True
