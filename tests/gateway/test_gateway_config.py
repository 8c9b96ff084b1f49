"""gateway.toml against its schema (govedge.gateway.config): each class of mistake names the file,
the section and the key; TLS files are the file's folder's; the example file and docs/CONFIG.md are
what the schema writes. Then `govedge gateway check` against a real Mosquitto, and without one."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core.config import ConfigError
from govedge.core.registry import Registry
from govedge.gateway import config as gwconfig
from govedge.tools.dev import configdoc
from govedge.tools.dev.broker import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = '[gateway]\nid = "gw-1"\nkey_file = "gateway.key"\ndata_dir = "data"\nregistry = "registry.json"\n'


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        gwconfig.load(path)
    return str(err.value)


@pytest.mark.parametrize("text, named", [
    (GATEWAY + "[batch]\nintervall_s = 3\n", "[batch] intervall_s: unknown key; did you mean interval_s?"),
    (GATEWAY.replace("data_dir", "dta_dir"), "[gateway] dta_dir: unknown key; did you mean data_dir?"),
    (GATEWAY + "[stroe]\nmax_bytes = 1\n", "[stroe]: unknown section; did you mean [store]?"),
    (GATEWAY + "[verify]\nworkrs = 2\n", "[verify] workrs: unknown key; did you mean workers?"),
    (GATEWAY + "[batch]\ninterval_s = \"ten\"\n", '[batch] interval_s = "ten": expected a number above 0'),
    (GATEWAY + "[metrics]\nport = \"9108x\"\n", '[metrics] port = "9108x": expected a whole number 0..65535'),
    (GATEWAY.replace('"gw-1"', "5"), "[gateway] id = 5: expected a string of letters, digits, '.', '_', '-'"),
    (GATEWAY + "[store]\nmax_bytes = true\n", "[store] max_bytes = true: expected a whole number of at least 1"),
    (GATEWAY + "[hub]\nheartbeat_s = -5\n", "[hub] heartbeat_s = -5: expected a number of at least 0"),
    (GATEWAY + "[ingest.mqtt]\nport = 70000\n", "[ingest.mqtt] port = 70000: expected a whole number 1..65535"),
    (GATEWAY + "[ingest.serial]\nports = \"/dev/ttyUSB0\"\n",
     '[ingest.serial] ports = "/dev/ttyUSB0": expected a list'),
    (GATEWAY + "[store]\npolicy = \"drop_newest\"\n", '[store] policy = "drop_newest": expected one of '
                                                      '"drop_oldest", "refuse_new"'),
    (GATEWAY + "[hub]\npassword = 12345678\n", "[hub] password = (hidden): expected a string"),
    (GATEWAY.replace('key_file = "gateway.key"\n', ""), "[gateway] key_file is missing"),
    (GATEWAY + "[anchor]\nbackend = \"evm\"\n", "[anchor.evm] rpc_url is missing"),
    (GATEWAY + "[anchor.rest]\ntimeout_s = \"10s\"\n", '[anchor.rest] timeout_s = "10s": expected a number'),
])
def test_each_mistake_names_the_file_section_and_key(tmp_path, text, named):
    assert load_error(tmp_path, text).startswith(f"{tmp_path / 'gateway.toml'}: {named}")


def test_paths_and_tls_files_are_relative_to_the_files_folder(tmp_path):
    path = tmp_path / "etc" / "gateway.toml"
    path.parent.mkdir()
    path.write_text(GATEWAY + '[ingest.mqtt]\ntls = true\nca = "tls/ca.pem"\n'
                              '[hub]\ntls = true\nca = "hub-ca.pem"\ncert = "/etc/ssl/gw.pem"\nkey = "gw.key"\n'
                              '[anchor]\nbackend = "evm"\n[anchor.evm]\nrpc_url = "http://127.0.0.1:8545"\n'
                              'contract = "0x0000000000000000000000000000000000000001"\nkey_file = "anchor.key"\n')
    cfg = gwconfig.load(path)
    folder = tmp_path / "etc"
    assert (cfg.key_file, cfg.data_dir, cfg.registry) == (folder / "gateway.key", folder / "data",
                                                         folder / "registry.json")
    assert cfg.ingest.ca == str(folder / "tls/ca.pem")
    assert (cfg.hub.ca, cfg.hub.cert, cfg.hub.key) == (str(folder / "hub-ca.pem"), "/etc/ssl/gw.pem",
                                                       str(folder / "gw.key"))
    assert cfg.anchor["key_file"] == str(folder / "anchor.key")


def test_heartbeat_defaults_to_a_minute_and_zero_turns_it_off():
    doc = tomllib.loads(GATEWAY)
    assert gwconfig.parse(doc).heartbeat_s == 60.0
    assert gwconfig.parse({**doc, "hub": {"heartbeat_s": 0}}).heartbeat_s == 0.0


def test_the_example_file_is_what_the_schema_writes_and_parses(tmp_path):
    files = configdoc.gateway_files()
    example = ROOT / "gateway/gateway.toml"
    assert example.read_text() == files[example], "run python -m govedge.tools.dev.configdoc"
    cfg = gwconfig.load(example)
    assert cfg.gateway_id == "gw-muenster-01" and cfg.metrics_port == 9108 and cfg.heartbeat_s == 60.0
    assert cfg.hub.host == "hub.example.nrw" and cfg.hub.tls and cfg.batch_interval_s == 10.0
    # every key of the schema is in the example: set, or commented out when it has no value of its own
    text = example.read_text()
    for section in gwconfig.schema_sections():
        assert f"\n[{section.name}]\n" in text
        for key in section.keys:
            assert f"\n{key.name} = " in text or f"\n# {key.name} = " in text, (section.name, key.name)


def test_the_docs_tables_are_what_the_schema_writes():
    files = configdoc.gateway_files()
    doc = ROOT / "docs/CONFIG.md"
    assert doc.read_text() == files[doc], "run python -m govedge.tools.dev.configdoc"
    text = doc.read_text()
    assert "| `heartbeat_s` | number of at least 0 | `60` |" in text
    assert "| `interval_s` | number above 0 | `10` |" in text


def test_the_configuration_install_writes_is_valid(tmp_path):
    from govedge.gateway import install

    lay = install.Layout(tmp_path)
    options = install.Options(root=tmp_path, gateway_id="gw-1", hub_host="hub.example", hub_ca="hub-ca.pem")
    cfg = gwconfig.parse(tomllib.loads(install._toml(options, lay, "secret", {})), base=lay.etc)
    assert cfg.hub.ca == str(lay.etc / "hub-ca.pem") and cfg.ingest.ca == str(lay.tls / "ca.pem")


# -- govedge gateway check ---------------------------------------------------------------------


def check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "gateway", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def lines_of(out: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """{check: (mark, text)} from the command's lines."""
    found = {}
    for line in out.stdout.splitlines():
        mark, name, text = line[:5].strip(), line[6:21].strip(), line[22:]
        found[name] = (mark, text)
    return found


def a_gateway(folder: Path, broker_port: int, hub_port: int, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "gateway.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    Registry(path=folder / "registry.json").save()
    path = folder / "gateway.toml"
    path.write_text(GATEWAY + f'[ingest.mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
                              f'[hub]\nhost = "127.0.0.1"\nport = {hub_port}\n' + extra)
    return path


@pytest.fixture
def mosquitto(tmp_path):
    if not mosquitto_binary():
        pytest.skip("mosquitto is not installed (make test installs it)")
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


def test_check_passes_a_ready_gateway_against_a_real_broker(tmp_path, mosquitto):
    config = a_gateway(tmp_path / "gw", mosquitto.port, mosquitto.port)
    out = check(config)
    found = lines_of(out)
    # the clock is this machine's: an unsynchronised one is a failure the check must report
    assert out.returncode == (1 if found["clock"][0] == "FAIL" else 0), out.stdout + out.stderr
    assert found["configuration"] == ("ok", f"{config} is valid")
    assert found["disk space"][0] == "ok" and "GB free at" in found["disk space"][1]
    assert found["gateway key"] == ("ok", f"{tmp_path / 'gw/gateway.key'}: a P-256 private key")
    assert found["registry"] == ("ok", f"0 devices in {tmp_path / 'gw/registry.json'}")
    assert found["data folder"][0] == "ok" and found["local broker"][0] == "ok"
    assert found["local broker"][1] == f"MQTT login to 127.0.0.1:{mosquitto.port} accepted"
    assert found["hub broker"] == ("ok", f"127.0.0.1:{mosquitto.port} reachable")
    assert found["govchain"] == ("--", 'no anchoring configured ([anchor] backend = "none")')
    assert "Traceback" not in out.stderr


def test_check_names_a_missing_broker_and_what_to_do(tmp_path, mosquitto):
    nothing = free_port()  # nothing listens there
    config = a_gateway(tmp_path / "gw", nothing, mosquitto.port)
    out = check(config)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    mark, text = lines_of(out)["local broker"]
    assert mark == "FAIL" and text.startswith(f"127.0.0.1:{nothing} unreachable: ")
    assert "check [ingest.mqtt] host and port" in text
    assert lines_of(out)["hub broker"][0] == "ok"


def test_check_names_a_wrong_key_and_missing_tls_files(tmp_path):
    config = a_gateway(tmp_path / "gw", free_port(), free_port())
    config.write_text(config.read_text().replace('[hub]\n', '[hub]\ntls = true\nca = "tls/hub-ca.pem"\n'))
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "gw/gateway.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    out = check(config)
    assert out.returncode == 1
    found = lines_of(out)
    assert found["gateway key"][0] == "FAIL" and "not a P-256 key" in found["gateway key"][1]
    assert found["hub TLS"] == ("FAIL", f"{tmp_path / 'gw/tls/hub-ca.pem'} not found: fix [hub] ca or put the "
                                        "file there")


@pytest.mark.parametrize("mistake, named", [
    ("[batch]\nintervall_s = 3\n", "[batch] intervall_s: unknown key; did you mean interval_s?"),
    ("[filter.quantities.temp]\nmn = 3\n", "filter config quantities.temp.mn"),
])
def test_check_of_an_invalid_configuration_says_why_in_one_line_and_exits_2(tmp_path, mistake, named):
    config = a_gateway(tmp_path / "gw", free_port(), free_port(), mistake)
    out = check(config)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("govedge gateway check: ")
    assert named in out.stderr


def test_check_reads_the_tls_files_as_the_broker_connection_would(tmp_path):
    config = a_gateway(tmp_path / "gw", free_port(), free_port())
    config.write_text(config.read_text().replace('[hub]\n', '[hub]\ntls = true\nca = "hub-ca.pem"\n'))
    (tmp_path / "gw/hub-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                            "-----END CERTIFICATE-----\n")
    mark, text = lines_of(check(config))["hub TLS"]
    assert mark == "FAIL" and text.startswith(f"[hub] ca {tmp_path / 'gw/hub-ca.pem'}: not usable PEM")
    from govedge.core.install import broker_tls
    from govedge.gateway.install import Layout

    lay = Layout(tmp_path / "root")  # a CA as `govedge gateway install` makes one
    broker_tls(lay.tls, "govchain-edge gateway CA", ["127.0.0.1"], [])
    config.write_text(config.read_text().replace('ca = "hub-ca.pem"', f'ca = "{lay.tls / "ca.pem"}"'))
    assert lines_of(check(config))["hub TLS"] == ("ok", f"ca {lay.tls / 'ca.pem'}")
