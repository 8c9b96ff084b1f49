"""A board's log over its serial port: `govedge monitor`, and the words the field tools read it by.

A node writes one line per event, "[     12.345] tag: text" (log() in firmware/node.py); a
config.json or key file it cannot use gives one "[config] ..." line from main.py, and the node
stops there. `govedge flash` follows that log after its upload and tells the technician what the
node is doing by the tags and phrases below. They are the firmware's own words: each one stands
literally in firmware/ (tests/firmware/test_node_log.py finds every one there), so a firmware change that
rewords a line fails a test instead of leaving flash unable to tell a running node from a broken
one. The firmware does not import this module: it stays flat, as it lands on a board.
"""

from __future__ import annotations

import os
import re
import sys
import time

LINE = re.compile(r"^\[\s*\d+\.\d{3}\] (\w+): (.*)$")  # seconds since boot, tag, text

# tags of the lines the tools read
NODE = "node"
MQTT = "mqtt"
WIFI = "wifi"
UPLINK = "uplink"
SENSOR = "sensor"
TAGS = (NODE, MQTT, WIFI, UPLINK, SENSOR)

# what the lines say, as firmware/ writes it
CONFIG = "[config] "  # main.py: config.json or the key file is unusable; the node stops there
CONFIG_KEY = "key: "  # config.py: the key file's fault, after CONFIG ("config: " is config.json's)
UP = " up: "  # node: "DEVICE up: seq from N, ..." once per boot
CYCLE_FAILED = "cycle failed"  # node: a cycle raised; the node goes on
CONNECTED = "connected to "  # mqtt: "connected to HOST:PORT"
WIFI_FAILED = "could not join"  # wifi: "could not join 'SSID' (status N)"
DELIVERED = "first message delivered"  # uplink, once per boot: "(#SEQ)", committed by the gateway (its ack)
BUFFER_SENT = "buffer sent"  # uplink: the gateway acknowledged the backlog a failure left
NO_ACK = "no acknowledgement from the gateway"  # uplink: the broker takes messages, the gateway commits none
UNREACHABLE = " unreachable"  # uplink: "broker HOST:PORT unreachable: ..."
SENSOR_BACK = " working again"  # sensor: "NAME working again"; any other sensor line is a fault
PHRASES = (CONFIG, CONFIG_KEY, UP, CYCLE_FAILED, CONNECTED, WIFI_FAILED, DELIVERED, BUFFER_SENT,
           NO_ACK, UNREACHABLE, SENSOR_BACK)

# MicroPython's own words, not the firmware's
SOFT_REBOOT = "soft reboot"  # a soft reset: main.py runs next
TRACEBACK = "Traceback (most recent call last)"  # the exception's own line follows the frames
PROMPT = b">>> "  # main.py has ended: the friendly REPL
NO_DEVICE = ("ENODEV", "Errno 19")  # an I2C read from an address nothing answers


def judge(line: str) -> tuple[str, str] | None:
    """What a line of the node's log means for flashing: ("error", in plain words),
    ("connected", broker), ("up", device), ("delivered", "#seq"); None for the others."""
    if line.startswith(CONFIG):
        return "error", "bad key file" if line.startswith(CONFIG + CONFIG_KEY) else "bad config"
    m = LINE.match(line)
    if not m:
        return None
    tag, text = m.groups()
    if tag == NODE and UP in text:
        return "up", text.split(" ", 1)[0]
    if tag == MQTT and text.startswith(CONNECTED):
        return "connected", text[len(CONNECTED):]
    if tag == WIFI and text.startswith(WIFI_FAILED):
        return "error", "Wi-Fi failed"
    if tag == UPLINK and text.startswith(DELIVERED):
        return "delivered", text[len(DELIVERED):].strip(" ()")
    if tag == UPLINK and text.startswith(NO_ACK):
        return "error", "the gateway does not acknowledge"
    if tag == UPLINK and UNREACHABLE in text:
        return "error", "broker unreachable"
    if tag == UPLINK and text != BUFFER_SENT:
        return "error", "sending failed"
    if tag == SENSOR and not text.endswith(SENSOR_BACK):
        name, _, why = text.partition(": ")
        if any(word in why for word in NO_DEVICE):
            return "error", f"sensor {name} missing (no answer on its bus)"
        return "error", f"sensor {name} failing"
    if tag == NODE and text.startswith(CYCLE_FAILED):
        return "error", "the node's cycle failed"
    return None


def port_problem(port: str) -> str:
    """Why a serial port does not open, and what to do about it."""
    if not os.path.exists(port):
        return f"there is no serial port {port}: is the board plugged in? (ls /dev/serial/by-id/ lists them)"
    if not os.access(port, os.R_OK | os.W_OK):
        return f"no permission to open {port}: add your user to the 'dialout' group and log in again"
    return f"cannot open {port}: another program has it open (govedge monitor, a serial terminal)?"


def monitor(port: str, baud: int = 115200, out=None) -> int:
    """Print the board's lines as they come, until Ctrl-C; waits for the port when it goes away."""
    import serial

    out = out or sys.stdout
    buf = b""
    announced = False
    try:
        while True:
            try:
                ser = serial.Serial(port, baud, timeout=0.2, exclusive=True)
            except (serial.SerialException, OSError):
                if not announced:
                    print(f"govedge monitor: {port_problem(port)}; waiting for it (Ctrl-C ends)",
                          file=sys.stderr, flush=True)
                    announced = True
                time.sleep(0.5)
                continue
            announced = False
            print(f"govedge monitor: {port} at {baud} baud (Ctrl-C ends)", file=sys.stderr, flush=True)
            try:
                with ser:
                    while True:
                        buf += ser.read(ser.in_waiting or 1)
                        while b"\n" in buf:
                            raw, buf = buf.split(b"\n", 1)
                            out.write(raw.decode("utf-8", "replace").rstrip("\r") + "\n")
                            out.flush()
            except (serial.SerialException, OSError) as exc:
                print(f"govedge monitor: {port} went away ({exc}); waiting for it", file=sys.stderr, flush=True)
                announced = True
    except KeyboardInterrupt:
        if buf:
            out.write(buf.decode("utf-8", "replace").rstrip("\r") + "\n")
        out.flush()
        return 0
