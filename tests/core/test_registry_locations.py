"""A device's locations in the registry: a history of WGS 84 positions, newest last, checked strictly when a
registry is loaded and when a location is set; a registry written before locations loads and saves as it was."""

import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core.registry import Registry, RegistryError

DEVICE = "esp32-0007"


def _public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint).hex()


def _write(path, locations=None) -> str:
    """A registry file as Registry.save writes it (indent 2, a newline at the end), with these locations."""
    entry = {"board": "esp32", "sensors": ["bme280"],
             "keys": [{"public_key": _public_key(), "status": "active", "created": "2026-03-01T09:12:00Z"}]}
    if locations is not None:
        entry["locations"] = locations
    text = json.dumps({"format": "govedge-registry/1", "devices": {DEVICE: entry}}, indent=2) + "\n"
    path.write_text(text)
    return text


DOMPLATZ = {"latitude": 51.962944, "longitude": 7.625519, "height": 62, "place": "Domplatz, M\u00fcnster, lamp post 12",
            "since": "2026-03-01T09:12:00Z"}
MOVED = {"latitude": 51.9631, "longitude": 7.6262, "since": "2026-11-29T06:01:25Z"}


def test_a_registry_written_before_locations_loads_and_saves_unchanged(tmp_path):
    path = tmp_path / "registry.json"
    text = _write(path)
    registry = Registry.load(path)
    device = registry.devices[DEVICE]
    assert device.locations == [] and device.location is None
    registry.save()
    assert path.read_text() == text  # nothing gained: no empty "locations"


def test_a_history_of_locations_loads_with_the_newest_as_current_and_saves_unchanged(tmp_path):
    path = tmp_path / "registry.json"
    text = _write(path, [DOMPLATZ, MOVED])
    registry = Registry.load(path)
    device = registry.devices[DEVICE]
    assert [loc.since for loc in device.locations] == [DOMPLATZ["since"], MOVED["since"]]
    current = device.location
    assert (current.latitude, current.longitude, current.height, current.place) == (51.9631, 7.6262, None, None)
    assert device.locations[0].place == "Domplatz, Münster, lamp post 12" and device.locations[0].height == 62
    registry.save()
    assert path.read_text() == text


@pytest.mark.parametrize("boundary", [
    {"latitude": 90, "longitude": 180, "height": 9000},
    {"latitude": -90, "longitude": -180, "height": -500},
    {"latitude": 0.0, "longitude": -0.0, "place": "x" * 200},
])
def test_the_bounds_themselves_are_positions(tmp_path, boundary):
    _write(tmp_path / "registry.json", [{**boundary, "since": "2026-03-01T09:12:00Z"}])
    location = Registry.load(tmp_path / "registry.json").devices[DEVICE].location
    assert location.latitude == boundary["latitude"] and location.longitude == boundary["longitude"]


BAD = [
    ({"latitude": 90.5}, "latitude 90.5 is outside -90..90"),
    ({"latitude": -91}, "latitude -91 is outside -90..90"),
    ({"longitude": 180.000001}, "longitude 180.000001 is outside -180..180"),
    ({"longitude": -181}, "longitude -181 is outside -180..180"),
    ({"height": 9001}, "height 9001 is outside -500..9000"),
    ({"height": -500.5}, "height -500.5 is outside -500..9000"),
    ({"latitude": True}, "latitude True is not a number"),
    ({"longitude": False}, "longitude False is not a number"),
    ({"latitude": "51.96"}, "latitude '51.96' is not a number"),
    ({"latitude": float("nan")}, "latitude nan is not a number"),  # json writes NaN, and its reader takes it
    ({"longitude": float("inf")}, "longitude inf is not a number"),
    ({"height": float("-inf")}, "height -inf is not a number"),
    ({"height": None}, "height None is null"),
    ({"height": [62]}, "height [62] is not a number"),
    ({"place": None}, "place None is null"),
    ({"place": 12}, "place 12 is not text"),
    ({"place": ""}, "place '' is empty"),
    ({"place": "x" * 201}, "is 201 characters long; at most 200"),
    ({"place": "lamp post\n12"}, r"place 'lamp post\n12' has a control character (U+000A)"),
    ({"place": "lamp\x00post"}, r"has a control character (U+0000)"),
    ({"place": "lamp\u2028post"}, r"has a control character (U+2028)"),
    ({"since": "yesterday"}, "since 'yesterday' is not a UTC time"),
    ({"since": 1764300000}, "since 1764300000 is not a UTC time"),
    ({"alt": 62}, "has the unknown field 'alt'"),
]


@pytest.mark.parametrize("change, says", BAD, ids=[s for _, s in BAD])
def test_a_bad_location_in_the_file_is_refused_naming_the_device_the_field_and_the_value(tmp_path, change, says):
    path = tmp_path / "registry.json"
    _write(path, [DOMPLATZ, {**MOVED, **change}])
    with pytest.raises(RegistryError) as caught:
        Registry.load(path)
    text = str(caught.value)
    assert text.startswith(f"registry {path}: device '{DEVICE}', location 2: "), text
    assert says in text and "\n" not in text


@pytest.mark.parametrize("locations, says", [
    ([{k: v for k, v in MOVED.items() if k != "latitude"}], "location 1: location has no latitude"),
    ([{k: v for k, v in MOVED.items() if k != "since"}], "location 1: location has no since"),
    (["51.96,7.62"], "location 1: location '51.96,7.62' is not an object"),
    ({"latitude": 51.96}, "locations {'latitude': 51.96} is not a list"),
    ([MOVED, DOMPLATZ], "location 2: since '2026-03-01T09:12:00Z' is before the location above it"),
])
def test_a_malformed_history_is_refused(tmp_path, locations, says):
    _write(tmp_path / "registry.json", locations)
    with pytest.raises(RegistryError, match=f"device '{DEVICE}'") as caught:
        Registry.load(tmp_path / "registry.json")
    assert says in str(caught.value)


def test_locate_appends_to_the_history_and_leaves_the_keys_alone(tmp_path):
    path = tmp_path / "registry.json"
    _write(path, [DOMPLATZ])
    registry = Registry.load(path)
    keys = [k.to_json() for k in registry.devices[DEVICE].keys]
    location, recorded = registry.locate(DEVICE, 51.9631, 7.6262, 60.5, "Domplatz, lamp post 14")
    assert recorded and registry.devices[DEVICE].location is location
    registry.save()
    again = Registry.load(path).devices[DEVICE]
    assert [k.to_json() for k in again.keys] == keys
    assert [loc.to_json() for loc in again.locations] == [DOMPLATZ, location.to_json()]
    assert location.to_json() == {"latitude": 51.9631, "longitude": 7.6262, "height": 60.5,
                                  "place": "Domplatz, lamp post 14", "since": location.since}


def test_locate_at_the_current_position_records_nothing_new(tmp_path):
    _write(tmp_path / "registry.json", [MOVED])
    registry = Registry.load(tmp_path / "registry.json")
    location, recorded = registry.locate(DEVICE, 51.9631, 7.6262)
    assert not recorded and location.since == MOVED["since"] and len(registry.devices[DEVICE].locations) == 1
    # the same position with a place is news: it is recorded
    assert registry.locate(DEVICE, 51.9631, 7.6262, place="Domplatz")[1]


@pytest.mark.parametrize("args, says", [
    ((91, 7.6), "latitude 91 is outside -90..90"),
    ((51.9, 7.6, 10_000), "height 10000 is outside -500..9000"),
    ((True, 7.6), "latitude True is not a number"),
    ((51.9, float("nan")), "longitude nan is not a number"),
    ((51.9, 7.6, None, "a\tb"), "place 'a\\tb' has a control character (U+0009)"),
])
def test_locate_refuses_a_bad_value_naming_the_device_and_changes_nothing(tmp_path, args, says):
    _write(tmp_path / "registry.json", [MOVED])
    registry = Registry.load(tmp_path / "registry.json")
    with pytest.raises(RegistryError) as caught:
        registry.locate(DEVICE, *args)
    assert str(caught.value).startswith(f"device '{DEVICE}': {says}"), str(caught.value)
    assert [loc.to_json() for loc in registry.devices[DEVICE].locations] == [MOVED]


def test_locate_of_an_unknown_device_is_refused(tmp_path):
    _write(tmp_path / "registry.json")
    with pytest.raises(RegistryError, match="device 'esp32-0099' is not in the registry; provision it first"):
        Registry.load(tmp_path / "registry.json").locate("esp32-0099", 51.9, 7.6)


@pytest.mark.parametrize("text, says", [
    ("51.9", "position '51.9' is not LAT,LON or LAT,LON,HEIGHT"),
    ("51,9,7,6,62", "position '51,9,7,6,62' is not LAT,LON or LAT,LON,HEIGHT"),  # decimal commas
    ("51.9,7.6,", "height '' is not a decimal number"),
    ("\u0665\u0661,7.6", "latitude '\u0665\u0661' is not a decimal number"),  # digits of another script
    ("5e1,7.6", "latitude '5e1' is not a decimal number"),
    ("51.9,Infinity", "longitude 'Infinity' is not a decimal number"),
    ("51.9,7.6,62m", "height '62m' is not a decimal number"),
    ("-90.01,7.6", "latitude -90.01 is outside -90..90"),
])
def test_a_typed_position_that_is_not_one_is_refused_naming_the_part(text, says):
    from govedge.core.registry import parse_position

    with pytest.raises(RegistryError) as caught:
        parse_position(text)
    assert str(caught.value).startswith(says), str(caught.value)


def test_a_typed_position_keeps_whole_numbers_whole():
    from govedge.core.registry import parse_position

    assert parse_position("52,7.6,62") == (52, 7.6, 62) and type(parse_position("52,7.6,62")[2]) is int
    assert parse_position(" +51.5 , -0.12 ") == (51.5, -0.12, None)


def test_a_location_older_than_the_current_one_is_refused_so_the_history_goes_forward(tmp_path):
    _write(tmp_path / "registry.json", [MOVED])
    registry = Registry.load(tmp_path / "registry.json")
    with pytest.raises(RegistryError, match=r"the new location's time 2026-11-01T00:00:00Z is before its current "
                                            r"location's \(2026-11-29T06:01:25Z\)"):
        registry.locate(DEVICE, 52.0, 7.0, since="2026-11-01T00:00:00Z")
    with pytest.raises(RegistryError, match="since 'yesterday' is not a UTC time"):
        registry.locate(DEVICE, 52.0, 7.0, since="yesterday")
    assert [loc.to_json() for loc in registry.devices[DEVICE].locations] == [MOVED]
