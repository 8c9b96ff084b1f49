"""The wiring drawings are generated from the pin maps and never disagree with them."""

import copy
import json
import re
import xml.etree.ElementTree as ET

import pytest

from govedge.tools.field import wiring
from govedge.tools.field.provision import PINS_DIR, board_pins
from govedge.core.registry import BOARDS

SVG = "{http://www.w3.org/2000/svg}"
PIN_KEYS = ("sda", "scl", "tx", "rx", "adc_pin")


def _pin_numbers(doc, out=None):
    """Every pin number in a pin map: the values of its sda, scl, tx, rx and adc_pin keys, at any depth."""
    out = set() if out is None else out
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in PIN_KEYS and isinstance(value, int):
                out.add(value)
            else:
                _pin_numbers(value, out)
    elif isinstance(doc, list):
        for value in doc:
            _pin_numbers(value, out)
    return out


def _connections(svg_text):
    """(part, role, board-side label, part-side label) of every drawn wire, read from the SVG's text."""
    root = ET.fromstring(svg_text.encode("utf-8"))
    found = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "connection":
            continue
        texts = {t.get("class"): "".join(t.itertext()) for t in g.iter(f"{SVG}text")}
        found.append((g.get("data-part"), g.get("data-role"), texts.get("board-pin", ""), texts.get("part-pin", "")))
    return found


def _gpio_of(label):
    match = re.match(r"GP(?:IO)?(\d+) \(", label)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("board", BOARDS)
def test_committed_drawing_is_the_one_its_pin_map_gives(board):
    committed = (wiring.WIRING_DIR / f"{board}.svg").read_text(encoding="utf-8")
    assert committed == wiring.render(board_pins(board)), (
        f"hardware/wiring/{board}.svg is out of date with hardware/pins/{board}.json: run python -m govedge.tools.field.wiring")


@pytest.mark.parametrize("board", BOARDS)
def test_drawing_is_well_formed_svg_for_an_a4_sheet_with_title_and_legend(board):
    root = ET.fromstring(wiring.render(board_pins(board)).encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("297mm", "210mm")
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("Sensor node wiring: ") for t in texts)
    assert "Legend" in texts
    assert root.find(f"{SVG}title") is not None


@pytest.mark.parametrize("board", BOARDS)
def test_every_pin_of_the_pin_map_is_a_labelled_connection(board):
    pins = board_pins(board)
    connections = _connections(wiring.render(pins))
    drawn = {_gpio_of(board_label) for _, _, board_label, _ in connections}
    missing = _pin_numbers(pins) - drawn
    assert _pin_numbers(pins), "the pin map names no pins at all"
    assert not missing, f"pins {sorted(missing)} of hardware/pins/{board}.json are not drawn"


@pytest.mark.parametrize("board", BOARDS)
def test_each_wire_lands_on_the_right_pin_of_the_part(board):
    pins = board_pins(board)
    connections = _connections(wiring.render(pins))

    def part_pin(part, gpio):
        hits = [p for part_, _, b, p in connections if part_ == part and _gpio_of(b) == gpio]
        assert len(hits) == 1, f"{board}: GPIO {gpio} drawn {len(hits)} times to the {part}"
        return hits[0]

    assert part_pin("bme280", pins["bme280"]["sda"]) == "SDA"
    assert part_pin("bme280", pins["bme280"]["scl"]) == "SCL"
    sds = pins["sds011"]
    if "tx" in sds:  # the board's TX drives the sensor's RXD, the sensor's TXD drives the board's RX
        assert part_pin("sds011", sds["tx"]) == "RXD"
        assert part_pin("sds011", sds["rx"]) == "TXD"
    else:
        assert any(part == "sds011" and sds["port"] in b for part, _, b, _ in connections)
    link = pins["gateway_serial"]
    link = link if "tx" in link else pins["uart_pins"][link["port"]]
    assert part_pin("gateway_serial", link["tx"]) == "RXD"
    assert part_pin("gateway_serial", link["rx"]) == "TXD"
    if pins.get("vsupply"):
        roles = [role for part, role, b, _ in connections if _gpio_of(b) == pins["vsupply"]["adc_pin"]]
        assert roles == ["adc_pin"]


@pytest.mark.parametrize("board", BOARDS)
def test_bme280_address_of_the_pin_map_is_the_sdo_strap_drawn(board):
    pins = board_pins(board)
    assert pins["bme280"]["address"] == 118
    texts = ["".join(t.itertext()) for t in ET.fromstring(wiring.render(pins).encode()).iter(f"{SVG}text")]
    assert "SDO to GND: address 0x76 (pin map 118)" in texts
    other = copy.deepcopy(pins)
    other["bme280"]["address"] = 0x77
    texts = ["".join(t.itertext()) for t in ET.fromstring(wiring.render(other).encode()).iter(f"{SVG}text")]
    assert "SDO to VIN: address 0x77 (pin map 119)" in texts


def test_a_moved_pin_moves_in_the_drawing():
    pins = board_pins("esp32")
    moved = copy.deepcopy(pins)
    moved["bme280"]["sda"], moved["header"]["position"]["18"] = 18, "J3-9"
    labels = [b for part, _, b, p in _connections(wiring.render(moved)) if part == "bme280" and p == "SDA"]
    assert labels == ["GPIO18 (J3-9)"]


def test_a_pin_without_a_header_position_is_refused_with_its_number():
    pins = board_pins("picow")
    del pins["header"]["position"]["4"]
    with pytest.raises(wiring.WiringError, match="pin 4 has no entry in header.position"):
        wiring.render(pins)


def test_main_check_names_a_stale_drawing_and_writes_nothing(tmp_path, capsys):
    assert wiring.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{b}.svg" for b in BOARDS)
    assert wiring.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "picow.svg").write_text("<svg/>", encoding="utf-8")
    assert wiring.main(["--out", str(tmp_path), "--check"]) == 1
    assert "picow.svg" in capsys.readouterr().err
    assert (tmp_path / "picow.svg").read_text(encoding="utf-8") == "<svg/>"


def test_gateway_pin_map_is_documentation_only_and_valid_json():
    doc = json.loads((PINS_DIR / "gateway.json").read_text())
    assert doc["board"] == "gateway" and "gateway" not in BOARDS
    assert doc["rtc"]["address"] == 0x68
