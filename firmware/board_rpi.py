# Raspberry Pi node (CPython on Raspberry Pi OS): the BME280 through Adafruit
# Blinka and adafruit_bme280, the SDS011 through pyserial, MQTT through
# paho-mqtt, sequence numbers in a file (fsynced), time from the OS.
# systemd restarts the service if it dies; there is no hardware watchdog here.

import math
import threading
import time

import clock
from counter import FileCounter


def open_i2c(spec):
    # Blinka's bus on the Pi's I2C pins (bus 1: GPIO2/GPIO3)
    import board
    import busio

    return busio.I2C(board.SCL, board.SDA, frequency=spec.get("freq", 100000))


def open_serial(port, baudrate):
    import serial

    return serial.Serial(port, baudrate=baudrate, timeout=0.1)


class AdafruitBME280:
    """Adafruit's driver, giving the same measurements as firmware/bme280.py."""

    def __init__(self, i2c, address):
        from adafruit_bme280 import basic

        try:
            self.sensor = basic.Adafruit_BME280_I2C(i2c, address=address)
        except (OSError, ValueError, RuntimeError) as exc:
            raise OSError("BME280 not found at 0x%02x: %s" % (address, exc))

    def measurements(self):
        s = self.sensor
        t, h, p = s.temperature, s.relative_humidity, s.pressure  # Cel, %RH, hPa
        return [("temp", "Cel", (_half_up(t * 100), -2)), ("hum", "%RH", (_half_up(h * 100), -2)),
                ("press", "Pa", _half_up(p * 100))]


def _half_up(x):
    # the rounding of firmware/bme280.py, so a Pi and a board agree on the same value
    return math.floor(x + 0.5)


def sensor(name, spec):
    if name == "bme280":
        return AdafruitBME280(open_i2c(spec), spec.get("address", 0x76))
    if name == "sds011":
        import sds011
        return sds011.SDS011(open_serial(spec["port"], 9600))
    raise ValueError("no driver for sensor %r" % name)


def seq_store(path):
    return FileCounter(path)


class PahoUplink:
    """QoS 1 through paho-mqtt; the gateway's acks come on mqtt.ack_topic, to paho's thread
    (the protocol of firmware/mqtt.py: the broker's PUBACK is transport, the ack is custody)."""

    def __init__(self, cfg, log, timeout_s=10):
        import paho.mqtt.client as paho

        m = cfg["mqtt"]
        self.log = log
        self.timeout_s = timeout_s
        self.where = "%s:%d" % (m["host"], m["port"])
        self.host, self.port, self.keepalive = m["host"], m["port"], m.get("keepalive", 60)
        self.topics = (m["topic"], m["status_topic"])
        self.ack_topic = m["ack_topic"]
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=m.get("client_id") or cfg["device_id"])
        if m.get("user"):
            self.client.username_pw_set(m["user"], m.get("password"))
        if m.get("tls"):
            import ssl

            with open(m.get("ca", "ca.der"), "rb") as f:  # the same DER file as on the boards
                self.client.tls_set_context(ssl.create_default_context(cadata=f.read()))
        self.ready = threading.Event()
        self.lock = threading.Lock()  # self.acks and self.lost, shared with paho's thread
        self.acks = []  # the acknowledgements (payloads) since acked()
        self.lost = None  # why the connection is no use since connect(): its acks are gone
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connected = False

    def _on_connect(self, client, userdata, flags, reason, properties):
        if not reason.is_failure:
            # clean session: subscribe on every connect; acks sent meanwhile are lost, the node sends again
            client.subscribe(self.ack_topic, 1)
            self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.ready.clear()
        with self.lock:
            self.lost = self.lost or "connection to %s lost" % self.where

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):  # the broker's ACL: no acks would ever come
            with self.lock:
                self.lost = "broker %s refused %s" % (self.where, self.ack_topic)

    def _on_message(self, client, userdata, msg):
        if msg.topic == self.ack_topic:
            with self.lock:
                self.acks.append(bytes(msg.payload))

    def connect(self):
        with self.lock:
            self.lost, self.acks = None, []
        try:
            self.client.connect(self.host, self.port, self.keepalive)
        except OSError as exc:
            raise OSError("broker %s unreachable: %r" % (self.where, exc))
        self.client.loop_start()
        if not self.ready.wait(self.timeout_s):
            self.close()
            raise OSError("broker %s did not accept the connection" % self.where)
        self.connected = True
        self.log("mqtt", "connected to %s" % self.where)

    def _check(self):
        # paho reconnects by itself: the node must hear of it, or it would wait for acks that are lost
        with self.lock:
            lost = self.lost
        if lost:
            self.close()
            raise OSError(lost)

    def send(self, kind, seq, msg):
        """Publish; False: the gateway's acknowledgement comes later, through acked()."""
        if not self.connected:
            self.connect()
        self._check()
        info = self.client.publish(self.topics[kind], bytes(msg), qos=1)
        deadline = time.monotonic() + self.timeout_s
        while not info.is_published() and time.monotonic() < deadline and self.ready.is_set():
            time.sleep(0.01)
        if not info.is_published():
            self.close()
            raise OSError("publish to %s not acknowledged" % self.where)
        return False

    def acked(self):
        """The acknowledgements (payloads) that came since the last call, or None."""
        if not self.connected:
            return None
        self._check()
        with self.lock:
            acks, self.acks = self.acks, []
        return acks or None

    def close(self):
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:
            pass
        if self.connected:
            self.log("mqtt", "disconnected from %s" % self.where)
        self.connected = False
        self.ready.clear()


def uplink(cfg, log):
    if cfg["transport"] == "serial":
        import serial_uplink
        s = cfg["serial"]
        return serial_uplink.Uplink(open_serial(s["port"], s.get("baud", 115200)), log)
    return PahoUplink(cfg, log)


def watchdog(seconds):
    return None


def mem_free():
    return None


def vsupply_mv(cfg):
    return None


def network_up(cfg, log):
    return True


def sync_time(cfg, log):
    # the OS keeps the clock (systemd-timesyncd); trust it once it is plausible
    return clock.unix_time() is not None


def deep_sleep(ms):
    time.sleep(ms / 1000)
