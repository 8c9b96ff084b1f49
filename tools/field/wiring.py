"""Wiring drawings of the sensor nodes, generated from their pin maps.

`render(board_json)` turns one pin map (hardware/pins/BOARD.json) into an SVG
drawing on an A4 landscape sheet: the board with the pins the node uses, the
BME280 breakout, the SDS011, the optional serial link to the gateway, and the
5 V supply with the divider that measures it. `python -m govedge.tools.field.wiring`
writes hardware/wiring/BOARD.svg for every node board; `--check` compares
instead and names the drawings that no longer match their pin maps.

Every wire is drawn straight across, from the board's pin on the left to the
part's pin on the right, so that no two wires cross. The drawings are never
edited by hand: change the pin map, then regenerate.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape

from govedge.tools.field.provision import PINS_DIR, board_pins
from govedge.core.registry import BOARDS
from govedge.core.errors import GovedgeError

WIRING_DIR = PINS_DIR.parent / "wiring"

# A4 landscape, 4 drawing units to the millimetre
PAGE_W, PAGE_H = 1188, 840
FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"

BOARD_X0, BOARD_X1 = 40, 300  # the board; its pins on the right edge
TAG_X0, TAG_X1 = 306, 384  # net tags of wires that start at a lever connector
SIGNAL_X = 396  # what a wire carries, written along it
DIVIDER_X, CAP_X, LEVER_X = 560, 600, 640
STRAP_X = 610  # where the BME280's SDO strap turns to its ground or VIN wire
PART_X0, PART_X1 = 660, 880  # the parts; their pins on the left edge
LEGEND_X0, LEGEND_X1 = 910, 1150
CONTENT_BOTTOM = 792
GROUP_GAP = 12

# one colour per kind of wire, in the legend's order
COLOURS = {
    "5v": ("#c62828", "+5 V supply"),
    "3v3": ("#e65100", "+3.3 V from the board"),
    "gnd": ("#212121", "ground (0 V)"),
    "i2c": ("#1565c0", "I2C (SDA, SCL)"),
    "tx": ("#2e7d32", "serial data sent by the board (TX)"),
    "rx": ("#6a1b9a", "serial data received by the board (RX)"),
    "sense": ("#8d6e63", "supply measurement (ADC)"),
    "usb": ("#546e7a", "USB cable"),
}

# datasheet facts every node drawing repeats (sources named in hardware/README.md)
FACTS = (
    "GPIOs are 3.3 V only: never connect 5 V to a GPIO.",
    "SDS011: 5 V supply (4.7 to 5.3 V), 70 mA \u00b1 10 mA when working; its TXD and RXD "
    "are 3.3 V logic, so they connect straight to the board (SDS011 datasheet V1.3: "
    "technical parameters, power requirement, interface specification).",
    "BME280: supply 1.71 to 3.6 V (BME280 datasheet, key features); SDO to GND gives "
    "address 0x76, SDO to VDDIO 0x77, and SDO must never float (section 6.2).",
)


class WiringError(GovedgeError, ValueError):
    code = "wiring"


@dataclass
class Row:
    """One wire, drawn straight across at one height."""

    part_pin: str  # the pin's name on the part ("SDA", "TXD"); "" where the wire ends elsewhere
    kind: str  # key of COLOURS
    board: str | None = None  # the board pin it starts at, e.g. "GPIO21 (J3-6)"
    tag: str | None = None  # or the lever connector it starts at, e.g. "W1 +5 V"
    start_x: float | None = None  # or where it starts (a strap, an adapter)
    end_x: float = PART_X0  # where it ends: the part's pin, or a divider node
    signal: str = ""  # what it carries
    to_part: bool | None = None  # data direction: True board -> part, False part -> board
    part_note: str = ""  # grey, at the part's right edge: connector pin, wire colour, silk name
    role: str = ""  # the pin-map key the wire realises ("sda", "tx", "adc_pin", ...)


@dataclass
class Group:
    """One part and the wires to it."""

    key: str  # pin-map key: bme280, sds011, gateway_serial, supply
    title: str
    subtitle: str
    rows: list[Row]
    unused: str = ""  # the part's pins left unconnected, one line
    pitch: int = 18
    optional: bool = False  # dashed wires
    extras: list[Callable[[list[int]], list[str]]] = field(default_factory=list)


# --- the board's pins ---------------------------------------------------------------------

def _gpio(board: dict, n: int) -> str:
    header = board.get("header") or {}
    position = (header.get("position") or {}).get(str(n))
    if position is None:
        raise WiringError(f"pin map {board['board']!r}: pin {n} has no entry in header.position")
    name = header.get("gpio_label", "GPIO{}").format(n)
    return f"{name} ({header.get('position_label', '{}').format(position)})"


def _power(board: dict, spec: dict) -> str:
    if spec.get("pin") is None:
        return spec["label"]
    label = (board.get("header") or {}).get("position_label", "{}")
    return f"{spec['label']} ({label.format(spec['pin'])})"


def _ground(board: dict, role: str) -> str:
    grounds = (board.get("power") or {}).get("gnd") or {}
    if role not in grounds:
        raise WiringError(f"pin map {board['board']!r}: no ground pin for {role!r} in power.gnd")
    return _power(board, grounds[role])


def _serial_pins(board: dict, spec: dict) -> dict | None:
    """tx/rx GPIOs of a serial spec: given directly, or those of its port (uart_pins)."""
    if "tx" in spec:
        return spec
    return (board.get("uart_pins") or {}).get(spec.get("port"))


# --- the parts ----------------------------------------------------------------------------

def _bme280(board: dict) -> Group:
    spec = board["bme280"]
    address = spec.get("address", 0x76)
    if address not in (0x76, 0x77):
        raise WiringError(f"pin map {board['board']!r}: BME280 address {address} is neither 0x76 nor 0x77")
    strap_to_gnd = address == 0x76
    bus = f"I2C{spec['i2c']}"
    rows = [
        Row("VIN", "3v3", board=_power(board, board["power"]["out_3v3"]), signal="3.3 V",
            part_note="silk: VIN"),
        Row("GND", "gnd", board=_ground(board, "bme280")),
        Row("SDO", "gnd" if strap_to_gnd else "3v3", start_x=STRAP_X,
            signal=f"SDO to {'GND' if strap_to_gnd else 'VIN'}: address 0x{address:02X} (pin map {address})",
            role="address"),
        Row("SDA", "i2c", board=_gpio(board, spec["sda"]), signal=f"{bus} SDA", part_note="silk: SDI",
            role="sda"),
        Row("SCL", "i2c", board=_gpio(board, spec["scl"]),
            signal=f"{bus} SCL, {spec.get('freq', 100000) / 1000:g} kHz", part_note="silk: SCK", role="scl"),
    ]
    target = 1 if strap_to_gnd else 0

    def strap(ys: list[int]) -> list[str]:
        colour = COLOURS[rows[2].kind][0]
        return [_line(STRAP_X, ys[2], STRAP_X, ys[target], colour), _dot(STRAP_X, ys[target], colour)]

    return Group("bme280", "BME280 breakout (I2C)",
                 f"Bosch BME280 on an Adafruit 2652 or equal, with SDO and CS pins; address 0x{address:02X}: "
                 f"SDO strapped to {'GND' if strap_to_gnd else 'VIN'}",
                 rows, unused="CS: open (pulled up on the breakout: I2C)", extras=[strap])


def _sds011(board: dict) -> Group:
    spec = board["sds011"]
    if "port" in spec:
        return _sds011_usb(board, spec)
    power = board.get("power") or {}
    if power.get("sds011") != "supply":
        raise WiringError(f"pin map {board['board']!r}: power.sds011 must say where the SDS011's 5 V comes from")
    uart = f"UART{spec['uart']}"
    rows = [
        Row("5V", "5v", tag="W1 +5 V", part_note="pin 3"),
        Row("GND", "gnd", tag="W2 0 V", part_note="pin 5"),
        Row("RXD", "tx", board=_gpio(board, spec["tx"]), signal=f"{uart} TX to the sensor's RXD",
            to_part=True, part_note="pin 6", role="tx"),
        Row("TXD", "rx", board=_gpio(board, spec["rx"]), signal=f"{uart} RX from the sensor's TXD",
            to_part=False, part_note="pin 7", role="rx"),
    ]
    return Group("sds011", "SDS011 particle sensor (UART)",
                 "Nova Fitness SDS011, 9600 baud; 5 V supply, 3.3 V serial levels; 7-pin connector, 2.54 mm pitch",
                 rows, unused="pins 1, 2, 4 (CTL, PWM): not connected")


def _sds011_usb(board: dict, spec: dict) -> Group:
    # the sensor on its own USB-serial adapter: the Pi sees a serial port, the sensor gets 5 V from USB
    box_x0, box_x1 = SIGNAL_X + 44, DIVIDER_X
    rows = [
        Row("", "usb", board=f"USB ({spec['port']})", end_x=box_x0, signal="USB", role="port"),
        Row("5V", "5v", start_x=box_x1, part_note="pin 3"),
        Row("GND", "gnd", start_x=box_x1, part_note="pin 5"),
        Row("RXD", "tx", start_x=box_x1, to_part=True, part_note="pin 6"),
        Row("TXD", "rx", start_x=box_x1, to_part=False, part_note="pin 7"),
    ]

    def adapter(ys: list[int]) -> list[str]:
        top, bottom = ys[0] - 12, ys[-1] + 12
        mid = (box_x0 + box_x1) / 2
        out = [f'<rect x="{box_x0}" y="{top}" width="{box_x1 - box_x0}" height="{bottom - top}" '
               f'fill="#eceff1" stroke="#546e7a" stroke-width="1.5" rx="4"/>']
        for i, line in enumerate(("USB-serial", "adapter (CH340),", "comes with", "the SDS011")):
            out.append(_text(mid, top + 30 + 14 * i, line, size=10.5, anchor="middle"))
        return out

    return Group("sds011", "SDS011 particle sensor (USB)",
                 "Nova Fitness SDS011, 9600 baud, on its own USB-serial adapter and cable; its 5 V comes over USB",
                 rows, unused="pins 1, 2, 4 (CTL, PWM): not connected", extras=[adapter])


def _gateway_serial(board: dict) -> Group:
    spec = board["gateway_serial"]
    pins = _serial_pins(board, spec)
    if pins is None:
        raise WiringError(f"pin map {board['board']!r}: gateway_serial names neither tx/rx nor a port in uart_pins")
    where = f"UART{spec['uart']}" if "uart" in spec else spec["port"]
    rows = [
        Row("RXD", "tx", board=_gpio(board, pins["tx"]), signal=f"{where} TX to the adapter's RXD",
            to_part=True, part_note="yellow", role="tx"),
        Row("TXD", "rx", board=_gpio(board, pins["rx"]), signal=f"{where} RX from the adapter's TXD",
            to_part=False, part_note="orange", role="rx"),
        Row("GND", "gnd", board=_ground(board, "gateway_serial"), part_note="black"),
    ]
    return Group("gateway_serial", "Gateway link (optional)",
                 f"only with --transport serial: a 3.3 V USB-serial adapter at the gateway, e.g. FTDI "
                 f"TTL-232R-3V3; {spec.get('baud', 115200)} baud",
                 rows, unused="VCC (red, 5 V), CTS, RTS: not connected", optional=True)


def _resistor_ohms(ohms: float) -> str:
    return f"{ohms / 1000:g}k" if ohms < 1e6 else f"{ohms / 1e6:g}M"


def _supply(board: dict) -> Group:
    power = board["power"]
    supply_in = power["input"]
    volts = supply_in.get("volts", 5.0)
    amps = supply_in.get("min_current_a")
    title = f"{volts:g} V supply" + (f" (at least {amps:g} A)" if amps else "")
    vsupply = board.get("vsupply")
    if not vsupply:
        rows = [Row(supply_in.get("plug", "+5 V"), "usb", board=_power(board, supply_in), signal="power in",
                    part_note=supply_in.get("plug_note", ""))]
        return Group("supply", title, supply_in.get("about", ""), rows)

    divider = float(vsupply["divider"])
    r_bottom = 100_000
    r_top = (divider - 1) * r_bottom
    diode = supply_in.get("diode")
    rows = [Row("+5 V", "5v", board=_power(board, supply_in), signal=f"+{volts:g} V in",
                role="input"),
            Row("", "sense", board=_gpio(board, vsupply["adc_pin"]), end_x=CAP_X,
                signal=f"ADC: supply / {divider:g}", role="adc_pin")]
    if "divider" in power["gnd"]:
        rows.append(Row("", "gnd", board=_ground(board, "divider"), end_x=CAP_X))
    rows.append(Row("0 V", "gnd", board=_ground(board, "supply")))
    low = 2  # the divider's bottom row: its own ground pin, or the supply's

    def divider_parts(ys: list[int]) -> list[str]:
        sense = COLOURS["sense"][0]
        out = [_resistor(DIVIDER_X, ys[0], ys[1], f"R1 {_resistor_ohms(r_top)}", right=True),
               _resistor(DIVIDER_X, ys[1], ys[low], f"R2 {_resistor_ohms(r_bottom)}", right=False),
               _capacitor(CAP_X, ys[1], ys[low], "C1 100n")]
        out += [_dot(DIVIDER_X, ys[0], COLOURS["5v"][0]), _dot(DIVIDER_X, ys[1], sense),
                _dot(CAP_X, ys[1], sense), _dot(DIVIDER_X, ys[low], COLOURS["gnd"][0]),
                _dot(CAP_X, ys[low], COLOURS["gnd"][0])]
        if diode:
            out.append(_diode(LEVER_X - 36, ys[0], f"D1 {diode}"))
        # lever labels below their boxes: above W1 is the diode's label
        out += [_lever(LEVER_X, ys[0], "W1", COLOURS["5v"][0], below=True),
                _lever(LEVER_X, ys[-1], "W2", COLOURS["gnd"][0], below=True)]
        return out

    subtitle = (f"{supply_in.get('about', 'the node supply')}; R1/R2 divide it by {divider:g} for the ADC; "
                f"W1 and W2 join every +5 V and every 0 V wire")
    return Group("supply", title, subtitle, rows, pitch=26, extras=[divider_parts])


# --- SVG pieces ---------------------------------------------------------------------------

def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _text(x, y, text, size=11.5, anchor="start", weight="normal", fill="#212121", cls=None) -> str:
    extra = f' class="{cls}"' if cls else ""
    anchor_attr = f' text-anchor="{anchor}"' if anchor != "start" else ""
    weight_attr = f' font-weight="{weight}"' if weight != "normal" else ""
    return (f'<text{extra} x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}"{anchor_attr}{weight_attr} '
            f'fill="{fill}">{escape(text)}</text>')


def _line(x0, y0, x1, y1, colour, width=2.5, dashed=False) -> str:
    dash = ' stroke-dasharray="9 5"' if dashed else ""
    return (f'<line x1="{_n(x0)}" y1="{_n(y0)}" x2="{_n(x1)}" y2="{_n(y1)}" stroke="{colour}" '
            f'stroke-width="{_n(width)}"{dash}/>')


def _dot(x, y, colour) -> str:
    return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4" fill="{colour}"/>'


def _pin(x, y) -> str:
    return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3.5" fill="#ffffff" stroke="#212121" stroke-width="1.5"/>'


def _arrow(x, y, colour, right: bool) -> str:
    d = 9 if right else -9
    return (f'<polygon points="{_n(x - d)},{_n(y - 5)} {_n(x)},{_n(y)} {_n(x - d)},{_n(y + 5)}" '
            f'fill="{colour}"/>')


def _resistor(x, y0, y1, label, right: bool) -> str:
    colour = COLOURS["sense"][0]
    mid = (y0 + y1) / 2
    parts = [_line(x, y0, x, mid - 8, colour, 2), _line(x, mid + 8, x, y1, colour, 2),
             f'<rect x="{_n(x - 5)}" y="{_n(mid - 8)}" width="10" height="16" fill="#ffffff" '
             f'stroke="{colour}" stroke-width="2"/>',
             _text(x + 10 if right else x - 10, mid + 4, label, size=10, anchor="start" if right else "end")]
    return "".join(parts)


def _capacitor(x, y0, y1, label) -> str:
    colour = COLOURS["sense"][0]
    mid = (y0 + y1) / 2
    return "".join([_line(x, y0, x, mid - 3, colour, 2), _line(x, mid + 3, x, y1, colour, 2),
                    _line(x - 8, mid - 3, x + 8, mid - 3, colour, 2.5), _line(x - 8, mid + 3, x + 8, mid + 3, colour, 2.5),
                    _text(x + 12, mid + 4, label, size=10)])


def _diode(x, y, label) -> str:
    # conducts from the supply (right) to the board (left): the bar is on the board's side
    colour = COLOURS["5v"][0]
    return "".join([f'<polygon points="{_n(x + 8)},{_n(y - 7)} {_n(x + 8)},{_n(y + 7)} {_n(x - 6)},{_n(y)}" '
                    f'fill="#ffffff" stroke="{colour}" stroke-width="2"/>',
                    _line(x - 7, y - 7, x - 7, y + 7, colour, 2.5),
                    _text(x, y - 11, label, size=10, anchor="middle")])


def _lever(x, y, name, colour, below=False) -> str:
    return "".join([f'<rect x="{_n(x - 7)}" y="{_n(y - 7)}" width="14" height="14" fill="#fff8e1" '
                    f'stroke="{colour}" stroke-width="2"/>',
                    _text(x, y + 21 if below else y - 11, name, size=10, anchor="middle", weight="bold")])


def _tag(y, text, colour) -> str:
    x0, x1 = TAG_X0, TAG_X1
    return "".join([f'<polygon points="{_n(x0)},{_n(y)} {_n(x0 + 8)},{_n(y - 8)} {_n(x1)},{_n(y - 8)} '
                    f'{_n(x1)},{_n(y + 8)} {_n(x0 + 8)},{_n(y + 8)}" fill="#fff8e1" stroke="{colour}" '
                    f'stroke-width="1.5"/>',
                    _text((x0 + x1) / 2 + 4, y + 4, text, size=10.5, anchor="middle", weight="bold")])


# --- the sheet ----------------------------------------------------------------------------

def _groups(board: dict) -> list[Group]:
    groups = []
    if board.get("bme280"):
        groups.append(_bme280(board))
    if board.get("sds011"):
        groups.append(_sds011(board))
    if board.get("gateway_serial"):
        groups.append(_gateway_serial(board))
    if (board.get("power") or {}).get("input"):
        groups.append(_supply(board))
    return groups


def _group_svg(group: Group, y: int) -> tuple[list[str], int]:
    """The group's part, wires and board pins, its heading starting at y; returns the SVG and the next y."""
    out = [f'<g class="part" data-part="{group.key}">']
    out.append(_text(PART_X0, y + 12, group.title, size=13, weight="bold"))
    subtitle = textwrap.wrap(group.subtitle, 42)
    for i, line in enumerate(subtitle):
        out.append(_text(PART_X0, y + 26 + 12 * i, line, size=10, fill="#424242"))
    first = y + 26 + 12 * len(subtitle) + 12
    ys = [first + i * group.pitch for i in range(len(group.rows))]
    pinned = [yy for row, yy in zip(group.rows, ys) if row.part_pin]
    top = min(pinned) - 13
    bottom = max(pinned) + (24 if group.unused else 13)
    out.append(f'<rect x="{PART_X0}" y="{top}" width="{PART_X1 - PART_X0}" height="{bottom - top}" '
               f'fill="#f5f5f5" stroke="#424242" stroke-width="1.5" rx="4"/>')
    if group.unused:
        out.append(_text(PART_X0 + 10, bottom - 8, group.unused, size=9.5, fill="#616161"))
    for row, yy in zip(group.rows, ys):
        out.extend(_row_svg(group, row, yy))
    for extra in group.extras:
        out.extend(extra(ys))
    out.append("</g>")
    return out, bottom + GROUP_GAP


def _row_svg(group: Group, row: Row, y: int) -> list[str]:
    colour = COLOURS[row.kind][0]
    role = f' data-role="{row.role}"' if row.role else ""
    out = [f'<g class="connection" data-part="{group.key}"{role}>']
    if row.board is not None:
        start = BOARD_X1
        out.append(_text(BOARD_X1 - 10, y + 4, row.board, size=11.5, anchor="end", weight="bold", cls="board-pin"))
    elif row.tag is not None:
        start = TAG_X1
        out.append(_tag(y, row.tag, colour))
    else:
        start = row.start_x if row.start_x is not None else SIGNAL_X
    out.append(_line(start, y, row.end_x, y, colour, dashed=group.optional))
    if row.board is not None:
        out.append(_pin(BOARD_X1, y))
    if row.signal:
        out.append(_text(SIGNAL_X, y - 5, row.signal, size=10, fill="#424242", cls="signal"))
    if row.to_part is True:
        out.append(_arrow(row.end_x - 8, y, colour, right=True))
    elif row.to_part is False:
        out.append(_arrow(start + 14, y, colour, right=False))
    if row.part_pin and row.end_x == PART_X0:
        out.append(_pin(PART_X0, y))
        out.append(_text(PART_X0 + 10, y + 4, row.part_pin, size=11.5, weight="bold", cls="part-pin"))
        if row.part_note:
            out.append(_text(PART_X1 - 8, y + 4, row.part_note, size=10, anchor="end", fill="#616161",
                             cls="part-note"))
    elif row.part_pin:
        out.append(_text(row.end_x + 6, y + 4, row.part_pin, size=11.5, weight="bold", cls="part-pin"))
    out.append("</g>")
    return out


def _legend(board: dict, groups: list[Group]) -> list[str]:
    x, y = LEGEND_X0, 112
    out = ['<g class="legend">', _text(x, y, "Legend", size=14, weight="bold")]
    y += 20

    def entry(symbol: str, meaning: str) -> None:
        nonlocal y
        out.append(symbol)
        for line in textwrap.wrap(meaning, 36):
            out.append(_text(x + 40, y, line, size=10.5))
            y += 14
        y += 2

    used = {row.kind for g in groups for row in g.rows}
    for kind, (colour, meaning) in COLOURS.items():
        if kind in used:
            entry(_line(x, y - 4, x + 30, y - 4, colour), meaning)
    entry(_dot(x + 15, y - 4, "#212121"), "wires joined here")
    entry(_line(x, y - 4, x + 22, y - 4, "#424242") + _arrow(x + 30, y - 4, "#424242", True),
          "direction of the serial data")
    if any(g.optional for g in groups):
        entry(_line(x, y - 4, x + 30, y - 4, "#424242", dashed=True), "only for nodes wired to the gateway")
    if any(row.tag for g in groups for row in g.rows):
        entry(_lever(x + 15, y - 4, "", "#424242"), "W1, W2: lever connectors (WAGO 221) that join the wires")
        tag = (f'<polygon points="{x},{y - 4} {x + 6},{y - 10} {x + 30},{y - 10} {x + 30},{y + 2} '
               f'{x + 6},{y + 2}" fill="#fff8e1" stroke="#424242" stroke-width="1.5"/>')
        entry(tag, "a flag such as \u201cW1 +5 V\u201d: the wire goes to that lever connector")
    y += 8
    out.append(_text(x, y, "Check before powering on", size=12, weight="bold"))
    y += 16
    notes = list(FACTS)
    power_note = (board.get("power") or {}).get("note")
    if power_note:
        notes.append(power_note)
    notes.append("Pin map: " + board.get("notes", ""))
    for note in notes:
        for i, line in enumerate(textwrap.wrap(note, 42)):
            out.append(_text(x + (0 if i == 0 else 9), y, ("\u2022 " if i == 0 else "") + line, size=10))
            y += 12.5
        y += 4
    out.append("</g>")
    if y > CONTENT_BOTTOM:
        raise WiringError(f"pin map {board['board']!r}: the legend's notes do not fit on the sheet")
    return out


def render(board_json: dict) -> str:
    """The wiring drawing of one node board (a pin map as read from hardware/pins/BOARD.json), as SVG."""
    board = board_json
    name = board["board"]
    groups = _groups(board)
    body: list[str] = []
    title_lines = textwrap.wrap(board.get("name", name), 30)
    # the board's name sits in its box beside the first part's heading, above the first pin
    y = 104
    for group in groups:
        svg, y = _group_svg(group, y)
        body.extend(svg)
    if y - GROUP_GAP > CONTENT_BOTTOM:
        raise WiringError(f"pin map {name!r}: too many connections for one A4 sheet")
    board_bottom = y - GROUP_GAP + 6
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="297mm" height="210mm" '
        f'viewBox="0 0 {PAGE_W} {PAGE_H}" font-family="{FONT}">',
        f"<title>{escape(f'Wiring of the {name} sensor node')}</title>",
        f'<rect x="0" y="0" width="{PAGE_W}" height="{PAGE_H}" fill="#ffffff"/>',
        f'<rect x="20" y="20" width="{PAGE_W - 40}" height="{PAGE_H - 40}" fill="none" stroke="#212121" '
        f'stroke-width="1.5"/>',
        _text(40, 54, f"Sensor node wiring: {board.get('name', name)}", size=22, weight="bold", cls="title"),
        _text(40, 76, f"BME280 on I2C, SDS011, optional serial link to the gateway, supply. "
                      f"Pins from hardware/pins/{name}.json.", size=12, fill="#424242"),
        f'<g class="board" data-board="{name}">',
        f'<rect x="{BOARD_X0}" y="96" width="{BOARD_X1 - BOARD_X0}" height="{board_bottom - 96}" '
        f'fill="#e8f5e9" stroke="#1b5e20" stroke-width="2" rx="6"/>',
    ]
    for i, line in enumerate(title_lines):
        head.append(_text(BOARD_X0 + 12, 96 + 24 + 17 * i, line, size=13.5, weight="bold", fill="#1b5e20"))
    head.append(_text(BOARD_X0 + 12, 96 + 24 + 17 * len(title_lines), f"runtime: {board.get('runtime', '?')}",
                      size=10.5, fill="#1b5e20"))
    head.append("</g>")
    foot = [
        _text(40, PAGE_H - 30, f"Generated from hardware/pins/{name}.json by tools/field/wiring.py "
                               f"(python -m govedge.tools.field.wiring). Change the pin map and regenerate; "
                               f"never edit this drawing by hand.", size=10, fill="#616161"),
        "</svg>",
    ]
    return "\n".join(head + body + _legend(board, groups) + foot) + "\n"


def drawings(boards=BOARDS) -> dict[str, str]:
    """Every node board's drawing, by board name."""
    return {board: render(board_pins(board)) for board in boards}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m govedge.tools.field.wiring",
        description="Draw the sensor nodes' wiring (SVG) from their pin maps in hardware/pins/.")
    parser.add_argument("--out", default=str(WIRING_DIR), help=f"folder for BOARD.svg (default {WIRING_DIR})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail if a drawing in --out does not match its pin map")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        svgs = drawings()
    except WiringError as exc:
        print(f"wiring: {exc}", file=sys.stderr)
        return 2
    stale = []
    for board, svg in svgs.items():
        path = out / f"{board}.svg"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != svg:
                stale.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("wiring: out of date with the pin maps (run python -m govedge.tools.field.wiring): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
