"""Provisioning makes a key only the device has, and a registry entry that verifies it."""

import json
import stat
import subprocess
import sys

import pytest

from govedge.core import wire
from govedge.tools.field import firmware
from govedge.tools.field.provision import ProvisionError, provision
from govedge.core.registry import Registry, RegistryError


def _provision(tmp_path, device="esp32-0007", **kw):
    kw.setdefault("board", "esp32")
    kw.setdefault("sensors", ["bme280", "sds011"])
    board, sensors = kw.pop("board"), kw.pop("sensors")
    return provision(device, board, sensors, tmp_path / "registry.json", tmp_path / "devices", **kw)


def _sign_with_key_file(folder, seq=1):
    # sign with the provisioned key file exactly as a node does: config.load_key, then reading
    script = (
        "import config, reading\n"
        "d = config.load_key(%r)\n"
        "print(reading.signed_reading(d, 'esp32-0007', %d, 1764300000, [('temp', 'Cel', (2100, -2))]).hex())\n"
        % (str(folder / "device.key"), seq)
    )
    proc = firmware.run_micropython(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return bytes.fromhex(proc.stdout.decode().strip())


def test_private_key_file_is_owner_only_and_verifies_against_the_registry(tmp_path):
    result = _provision(tmp_path)
    folder = tmp_path / "devices" / "esp32-0007"
    key_file = folder / "device.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o600
    registry = Registry.load(tmp_path / "registry.json")
    reading = wire.verify(_sign_with_key_file(folder), registry)
    assert reading.device_id == "esp32-0007"
    assert result["public_key"] == registry.devices["esp32-0007"].active_key.public_key


def test_config_has_the_pins_of_the_board_and_the_device_topics(tmp_path):
    _provision(tmp_path, board="picow", sensors=["bme280"])
    cfg = json.loads((tmp_path / "devices" / "esp32-0007" / "config.json").read_text())
    pins = json.loads((firmware.FIRMWARE_DIR.parent / "hardware" / "pins" / "picow.json").read_text())
    assert cfg["sensors"] == {"bme280": pins["bme280"]}
    assert cfg["mqtt"]["topic"] == "govedge/v1/esp32-0007/reading"
    assert cfg["mqtt"]["status_topic"] == "govedge/v1/esp32-0007/status"


def test_provisioning_an_existing_device_refuses_without_rotate(tmp_path):
    _provision(tmp_path)
    before = (tmp_path / "devices" / "esp32-0007" / "device.key").read_text()
    with pytest.raises(RegistryError, match="already provisioned; use --rotate"):
        _provision(tmp_path)
    assert (tmp_path / "devices" / "esp32-0007" / "device.key").read_text() == before


def test_rotation_keeps_the_old_key_retired_so_old_readings_still_verify(tmp_path):
    _provision(tmp_path)
    folder = tmp_path / "devices" / "esp32-0007"
    old_message = _sign_with_key_file(folder, seq=1)
    _provision(tmp_path, rotate=True)
    new_message = _sign_with_key_file(folder, seq=2)
    registry = Registry.load(tmp_path / "registry.json")
    statuses = [k.status for k in registry.devices["esp32-0007"].keys]
    assert statuses == ["retired", "active"]
    assert wire.verify(old_message, registry).seq == 1
    assert wire.verify(new_message, registry).seq == 2
    # the new key signs differently: it really is a new key
    assert old_message[-64:] != new_message[-64:]


def test_rotation_of_an_unknown_device_is_refused(tmp_path):
    _provision(tmp_path, device="esp32-0008")
    with pytest.raises(RegistryError, match="not in the registry"):
        _provision(tmp_path, rotate=True)


@pytest.mark.parametrize(
    "device, board, sensors, message",
    [
        ("bad id!", "esp32", ["bme280"], "device id 'bad id!' is not valid"),
        ("esp32-0001", "arduino", ["bme280"], "unknown board 'arduino'"),
        ("esp32-0001", "esp32", ["dht22"], "unknown sensors"),
    ],
)
def test_bad_provisioning_requests_name_the_fault(tmp_path, device, board, sensors, message):
    with pytest.raises((ProvisionError, RegistryError), match=message):
        provision(device, board, sensors, tmp_path / "registry.json", tmp_path / "devices")
    assert not (tmp_path / "registry.json").exists()


def test_cli_never_prints_the_private_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "govedge.tools.cli", "provision", "rpi-0003", "--board", "rpi",
         "--registry", str(tmp_path / "registry.json"), "--out", str(tmp_path / "devices")],
        capture_output=True, text=True, env={"GOVEDGE_WIFI_PASSWORD": "street-secret", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    key = (tmp_path / "devices" / "rpi-0003" / "device.key").read_text().strip()
    assert key not in proc.stdout + proc.stderr
    assert "street-secret" not in proc.stdout + proc.stderr
    assert "provisioned rpi-0003" in proc.stdout


def test_damaged_registry_is_reported_with_its_fault(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"format": "govedge-registry/1", "devices": {
        "esp32-0001": {"board": "esp32", "sensors": [], "keys": [
            {"public_key": "04" + "00" * 64, "status": "active", "created": "2026-01-01T00:00:00Z"}]}}}))
    with pytest.raises(RegistryError, match="esp32-0001.*bad public key"):
        Registry.load(path)


def test_tls_needs_the_ca_and_puts_it_on_the_board_as_der(tmp_path):
    from cryptography import x509

    from support.nodes import make_ca_and_server_cert

    with pytest.raises(ProvisionError, match="--tls needs --ca"):
        _provision(tmp_path, tls=True)
    ca, _, _ = make_ca_and_server_cert(tmp_path / "tls")
    _provision(tmp_path, tls=True, ca=ca)
    folder = tmp_path / "devices" / "esp32-0007"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca"] == "ca.der"
    der = x509.load_der_x509_certificate((folder / "ca.der").read_bytes())
    assert der == x509.load_pem_x509_certificate(ca.read_bytes())


def _config(tmp_path, device="esp32-0007"):
    return json.loads((tmp_path / "devices" / device / "config.json").read_text())


def test_rotation_changes_the_key_and_keeps_every_other_value_of_the_config(tmp_path):
    _provision(tmp_path, broker_host="10.20.0.1", broker_port=8883, wifi_ssid="street-net",
               wifi_password="street-secret", interval_s=120, buffer_slots=64, mqtt_user="esp32-0007",
               mqtt_password="broker-secret")
    path = tmp_path / "devices" / "esp32-0007" / "config.json"
    edited = _config(tmp_path)
    edited["status_every"] = 3  # changed by hand on the bench
    path.write_text(json.dumps(edited))
    before = path.read_text()
    # the CLI's flags not given arrive as None: a rotation keeps those values
    _provision(tmp_path, rotate=True, broker_host=None, broker_port=None, wifi_ssid=None, wifi_password=None,
               interval_s=None, buffer_slots=None, tls=None, deep_sleep=None, transport=None)
    assert _config(tmp_path) == json.loads(before)
    # a flag given at the rotation changes its value, and what follows from it, no more
    _provision(tmp_path, rotate=True, interval_s=60)
    after = _config(tmp_path)
    assert after["interval_s"] == 60 and "warmup_s" not in after["sensors"]["sds011"]  # duty cycling from 90 s
    after["interval_s"], after["sensors"]["sds011"]["warmup_s"] = 120, 30
    assert after == json.loads(before)


def test_rotation_through_the_cli_keeps_broker_and_wifi(tmp_path):
    env = {"GOVEDGE_WIFI_PASSWORD": "street-secret", "PATH": ""}
    args = ["esp32-0007", "--board", "esp32", "--registry", str(tmp_path / "registry.json"),
            "--out", str(tmp_path / "devices")]
    assert _cli(args + ["--broker-host", "10.20.0.1", "--wifi-ssid", "street-net", "--interval", "30"],
                env).returncode == 0
    before = _config(tmp_path)
    out = _cli(args + ["--rotate"], {"PATH": ""})  # no password in the environment: the one on file stays
    assert out.returncode == 0, out.stderr
    assert _config(tmp_path) == before
    assert (before["mqtt"]["host"], before["wifi"], before["interval_s"]) == (
        "10.20.0.1", {"ssid": "street-net", "password": "street-secret"}, 30)


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "provision", *args],
                          capture_output=True, text=True, env=env)


def test_a_wifi_network_without_its_password_is_refused_unless_open(tmp_path):
    with pytest.raises(ProvisionError, match=r"--wifi-ssid street-net: no password in \$GOVEDGE_WIFI_PASSWORD"):
        _provision(tmp_path, wifi_ssid="street-net")
    assert not (tmp_path / "registry.json").exists() and not (tmp_path / "devices").exists()
    _provision(tmp_path, wifi_ssid="library-guest", open_wifi=True)
    assert _config(tmp_path)["wifi"] == {"ssid": "library-guest", "password": None}


def test_a_new_registry_is_announced_and_a_rotation_in_a_missing_one_refused(tmp_path):
    args = ["esp32-0007", "--board", "rpi", "--out", str(tmp_path / "devices")]
    out = _cli(args + ["--registry", str(tmp_path / "registry.json")], {"PATH": ""})
    assert out.returncode == 0 and "new registry: there was no " + str(tmp_path / "registry.json") in out.stdout
    out = _cli(["esp32-0008", "--board", "rpi", "--out", str(tmp_path / "devices"), "--registry",
                str(tmp_path / "registry.json")], {"PATH": ""})
    assert out.returncode == 0 and "new registry" not in out.stdout
    out = _cli(args + ["--rotate", "--registry", str(tmp_path / "registy.json")], {"PATH": ""})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"govedge provision: registry {tmp_path / 'registy.json'} does not exist (check --registry): "
                          "nothing to rotate\n")
    assert not (tmp_path / "registy.json").exists()


@pytest.mark.parametrize("flag, value, why", [
    ("--interval", "0", "interval_s must be a positive number of seconds, not 0"),
    ("--interval", "-5", "interval_s must be a positive number of seconds, not -5"),
    ("--buffer-slots", "1", "buffer needs at least 2 slots"),
    ("--broker-port", "70000", "mqtt.port 70000 is not a TCP port"),
])
def test_values_the_board_refuses_at_boot_are_refused_naming_the_flag(tmp_path, flag, value, why):
    out = _cli(["esp32-0007", "--board", "rpi", "--registry", str(tmp_path / "registry.json"),
                "--out", str(tmp_path / "devices"), flag, value], {"PATH": ""})
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"govedge provision: {flag} {value}: the board would refuse it at boot ({why}")
    assert len(out.stderr.splitlines()) == 1 and not (tmp_path / "registry.json").exists()


def test_what_provisioning_accepts_the_board_accepts_at_boot(tmp_path):
    # the boundary values, through the firmware's own config.load as the board runs it at boot
    _provision(tmp_path, interval_s=1, buffer_slots=2, broker_port=65535)
    folder = tmp_path / "devices" / "esp32-0007"
    proc = firmware.run_micropython("import config\ncfg = config.load(%r)\nprint(cfg['interval_s'], "
                                    "cfg['buffer']['slots'], cfg['mqtt']['port'])" % str(folder / "config.json"))
    assert proc.returncode == 0 and proc.stdout.decode().split() == ["1", "2", "65535"], proc.stderr


# -- where the device stands: --location, --place, `govedge locate` ------------------------------------------

def _locations(tmp_path, device="esp32-0007"):
    return [loc.to_json() for loc in Registry.load(tmp_path / "registry.json").devices[device].locations]


def test_a_new_device_gets_its_location_and_its_readings_still_verify(tmp_path):
    _provision(tmp_path, location="51.962944,7.625519,62", place="Domplatz, Münster, lamp post 12")
    registry = Registry.load(tmp_path / "registry.json")
    device = registry.devices["esp32-0007"]
    assert _locations(tmp_path) == [{"latitude": 51.962944, "longitude": 7.625519, "height": 62,
                                     "place": "Domplatz, Münster, lamp post 12", "since": device.keys[0].created}]
    # the gateway and the hub load this registry as before: the device's key verifies its readings
    assert wire.verify(_sign_with_key_file(tmp_path / "devices" / "esp32-0007"), registry).seq == 1


def test_a_device_provisioned_without_location_has_none_in_the_file(tmp_path):
    _provision(tmp_path)
    assert "locations" not in json.loads((tmp_path / "registry.json").read_text())["devices"]["esp32-0007"]


def test_a_rotation_without_location_keeps_the_devices_locations(tmp_path):
    _provision(tmp_path, location="51.962944,7.625519")
    before = _locations(tmp_path)
    result = _provision(tmp_path, rotate=True)
    assert _locations(tmp_path) == before and result["location"].to_json() == before[-1]
    assert not result["location_recorded"]


def test_a_rotation_with_location_moves_the_device_and_keeps_where_it_was(tmp_path):
    _provision(tmp_path, location="51.962944,7.625519,62", place="Domplatz, lamp post 12")
    first = _locations(tmp_path)
    _provision(tmp_path, rotate=True, location="51.9631,7.6262", place="Domplatz, lamp post 14")
    history = _locations(tmp_path)
    assert history[0] == first[0] and len(history) == 2
    assert {k: v for k, v in history[1].items() if k != "since"} == {
        "latitude": 51.9631, "longitude": 7.6262, "place": "Domplatz, lamp post 14"}
    assert history[1]["since"] >= history[0]["since"]  # registry times sort as text


def _provision_cli(tmp_path, *args, device="esp32-0007"):
    return _cli([device, "--board", "rpi", "--registry", str(tmp_path / "registry.json"),
                 "--out", str(tmp_path / "devices"), *args], {"PATH": ""})


BAD_FLAGS = [
    (["--location", "91,7.6"], "--location 91,7.6: latitude 91 is outside -90..90 (WGS 84 decimal degrees"),
    (["--location=-90.5,7.6"], "--location -90.5,7.6: latitude -90.5 is outside -90..90"),
    (["--location", "51.9,180.5"], "--location 51.9,180.5: longitude 180.5 is outside -180..180"),
    (["--location", "51.9,7.6,9000.1"], "--location 51.9,7.6,9000.1: height 9000.1 is outside -500..9000 (metres)"),
    (["--location=51.9,7.6,-501"], "--location 51.9,7.6,-501: height -501 is outside -500..9000"),
    (["--location", "nan,7.6"], "--location nan,7.6: latitude 'nan' is not a decimal number"),
    (["--location", "51.9,inf"], "--location 51.9,inf: longitude 'inf' is not a decimal number"),
    (["--location", "51.9,7.6,true"], "--location 51.9,7.6,true: height 'true' is not a decimal number"),
    (["--location", "51,96,7,62"], "--location 51,96,7,62: position '51,96,7,62' is not LAT,LON or LAT,LON,HEIGHT"),
    (["--location", "51.96"], "--location 51.96: position '51.96' is not LAT,LON or LAT,LON,HEIGHT"),
    (["--location", "51.9,7.6", "--place", "x" * 201], "is 201 characters long; at most 200"),
    (["--location", "51.9,7.6", "--place", "lamp post\n12"],
     r"--place 'lamp post\n12': has a control character (U+000A)"),
    (["--location", "51.9,7.6", "--place", ""], "--place '': is empty"),
    (["--place", "Domplatz"], "--place 'Domplatz' needs --location LAT,LON[,HEIGHT]"),
]


@pytest.mark.parametrize("flags, says", BAD_FLAGS, ids=[s[:40] for _, s in BAD_FLAGS])
def test_a_bad_location_flag_is_refused_in_one_line_and_changes_nothing(tmp_path, flags, says):
    assert _provision_cli(tmp_path, "--location", "51.962944,7.625519").returncode == 0
    registry, key = tmp_path / "registry.json", tmp_path / "devices" / "esp32-0007" / "device.key"
    before = registry.read_bytes(), key.read_bytes()
    for out in (_provision_cli(tmp_path, *flags, device="esp32-0008"), _provision_cli(tmp_path, "--rotate", *flags)):
        assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
        assert out.stderr.startswith("govedge provision: ") and says in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1
    assert (registry.read_bytes(), key.read_bytes()) == before
    assert not (tmp_path / "devices" / "esp32-0008").exists()


def _locate(tmp_path, *args):
    # --registry first: after "--" (a southern or western position) no option is read
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "locate", "--registry",
                           str(tmp_path / "registry.json"), *args],
                          capture_output=True, text=True, env={"PATH": ""})


def test_locate_moves_a_device_keeps_its_history_and_replaces_the_file_atomically(tmp_path):
    out = _provision_cli(tmp_path, "--location", "51.962944,7.625519,62", "--place", "Domplatz, lamp post 12")
    assert out.returncode == 0 and "  location  51.962944, 7.625519, 62 m (Domplatz, lamp post 12) since " \
        in out.stdout, out.stdout
    path = tmp_path / "registry.json"
    keys, inode = Registry.load(path).devices["esp32-0007"].keys, path.stat().st_ino
    out = _locate(tmp_path, "esp32-0007", "--place", "Salzstraße 21, Münster", "--", "-33.86,151.21,5")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    history = _locations(tmp_path)
    assert out.stdout == (f"esp32-0007: at -33.86, 151.21, 5 m (Salzstraße 21, Münster) since {history[1]['since']} "
                          f"({path}; 2 locations in its history)\n")
    assert history[1] == {"latitude": -33.86, "longitude": 151.21, "height": 5, "place": "Salzstraße 21, Münster",
                          "since": history[1]["since"]}
    assert history[0]["place"] == "Domplatz, lamp post 12"
    device = Registry.load(path).devices["esp32-0007"]
    assert [k.to_json() for k in device.keys] == [k.to_json() for k in keys]  # the keys are not touched
    # renamed into place, as provision writes it: a running gateway or hub never reads half a file
    assert path.stat().st_ino != inode and stat.S_IMODE(path.stat().st_mode) == 0o644
    # a device that had no location gets its first one
    assert _provision_cli(tmp_path, device="esp32-0008").returncode == 0
    out = _locate(tmp_path, "esp32-0008", "52.0,7.6")
    assert out.returncode == 0 and out.stdout.startswith("esp32-0008: at 52.0, 7.6 since "), out.stdout
    assert out.stdout.endswith("; 1 location in its history)\n")


def test_locate_at_the_current_position_says_so_and_leaves_the_file(tmp_path):
    assert _provision_cli(tmp_path, "--location", "51.962944,7.625519").returncode == 0
    path = tmp_path / "registry.json"
    before, inode = path.read_bytes(), path.stat().st_ino
    out = _locate(tmp_path, "esp32-0007", "51.962944,7.625519")
    since = _locations(tmp_path)[0]["since"]
    assert out.returncode == 0 and out.stdout == (f"esp32-0007: already at 51.962944, 7.625519 since {since} "
                                                  f"({path}; 1 location in its history)\n"), out.stdout
    assert path.read_bytes() == before and path.stat().st_ino == inode


@pytest.mark.parametrize("args, says", [
    (["esp32-0007", "91,7.6"], "govedge locate: LAT,LON[,HEIGHT] 91,7.6: latitude 91 is outside -90..90"),
    (["esp32-0007", "51.9,7.6,9001"], "govedge locate: LAT,LON[,HEIGHT] 51.9,7.6,9001: height 9001 is outside "
                                      "-500..9000 (metres)"),
    (["esp32-0007", "51,9,7,6"], "govedge locate: LAT,LON[,HEIGHT] 51,9,7,6: position '51,9,7,6' is not LAT,LON"),
    (["esp32-0007", "NaN,7.6"], "govedge locate: LAT,LON[,HEIGHT] NaN,7.6: latitude 'NaN' is not a decimal number"),
    (["esp32-0007", "51.9,7.6", "--place", "a\x1bb"], r"govedge locate: --place 'a\x1bb': has a control character "
                                                       "(U+001B)"),
    (["esp32-0007", "51.9,7.6", "--place", "é" * 201], "is 201 characters long; at most 200"),
    (["esp32-0099", "51.9,7.6"], "govedge locate: device 'esp32-0099' is not in the registry; provision it first"),
])
def test_locate_refuses_a_bad_value_in_one_line_and_leaves_the_file(tmp_path, args, says):
    assert _provision_cli(tmp_path, "--location", "51.962944,7.625519").returncode == 0
    before = (tmp_path / "registry.json").read_bytes()
    out = _locate(tmp_path, *args)
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stdout + out.stderr
    assert out.stderr.startswith("govedge locate: ") and says in out.stderr, out.stderr
    assert (tmp_path / "registry.json").read_bytes() == before


def test_a_moved_device_reaches_the_verifiers_of_a_running_gateway_or_hub(tmp_path):
    # the gateway's and the hub's own parts: the file watch that notices a change, the verifier and its worker
    # process, which load the registry with its locations and go on verifying the device's readings
    from govedge.core.verifypool import FileWatch, Verifier

    assert _provision_cli(tmp_path, "--location", "51.962944,7.625519,62").returncode == 0
    message = _sign_with_key_file(tmp_path / "devices" / "esp32-0007")
    path = tmp_path / "registry.json"
    watch, verifier = FileWatch(path), Verifier(path, workers=1)
    try:
        assert _locate(tmp_path, "esp32-0007", "51.9631,7.6262,61").returncode == 0
        assert watch.changed()
        registry = verifier.reload()
        assert (registry.devices["esp32-0007"].location.latitude, len(registry.devices["esp32-0007"].locations)) \
            == (51.9631, 2)
        [reading] = verifier.result([message], verifier.submit([message]))
        assert verifier.pool is not None and reading.device_id == "esp32-0007" and reading.seq == 1, reading
    finally:
        verifier.close()
