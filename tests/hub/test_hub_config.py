"""hub.toml against its schema (govedge.hub.config): each class of mistake names the file, the section
and the key; paths are the file's folder's; the example is what the schema writes. Then `govedge hub
check` against a real Mosquitto, a real SQLite store and a real PostgreSQL, and without a broker."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from govedge.core.config import ConfigError
from govedge.core.registry import Registry
from govedge.hub import config as hubconfig
from govedge.hub.gateways import Gateways
from govedge.hub.store import HubStore
from govedge.tools.dev import configdoc
from govedge.tools.dev.broker import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
HUB = '[hub]\nregistry = "registry.json"\ngateways = "gateways.json"\n'


@pytest.mark.parametrize("text, named", [
    (HUB.replace("gateways =", "gatways ="),
     "[hub] gatways: unknown key; did you mean gateways?"),
    (HUB + "[metrics]\nport = \"9109x\"\n", '[metrics] port = "9109x": expected a whole number 0..65535'),
    (HUB + "[mqtt]\nport = true\n", "[mqtt] port = true: expected a whole number 1..65535"),
    (HUB + "[mqtt]\ntls = \"yes\"\n", '[mqtt] tls = "yes": expected true or false'),
    (HUB + "[mqtt]\npassword = 42\n", "[mqtt] password = (hidden): expected a string"),
    (HUB + "[stor]\nurl = \"hub.db\"\n", "[stor]: unknown section; did you mean [store]?"),
    (HUB + 'share_group = "a/b"\n', '[hub] share_group = "a/b": expected a string of a name without'),
    (HUB + "verify_workers = 65\n", '[hub] verify_workers = 65: expected "auto" or a whole number 0..64'),
    (HUB.replace('registry = "registry.json"\n', ""), "[hub] registry is missing"),
])
def test_each_mistake_names_the_file_section_and_key(tmp_path, text, named):
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        hubconfig.load(path)
    assert str(err.value).startswith(f"{path}: {named}")


def test_paths_and_tls_files_are_relative_to_the_files_folder(tmp_path):
    path = tmp_path / "etc" / "hub.toml"
    path.parent.mkdir()
    path.write_text(HUB + '[mqtt]\ntls = true\nca = "tls/ca.pem"\ncert = "worker.pem"\nkey = "/etc/ssl/w.key"\n')
    cfg = hubconfig.load(path)
    folder = tmp_path / "etc"
    assert (cfg.registry, cfg.gateways, cfg.state_dir) == (folder / "registry.json", folder / "gateways.json", folder)
    assert (cfg.mqtt.ca, cfg.mqtt.cert, cfg.mqtt.key) == (str(folder / "tls/ca.pem"), str(folder / "worker.pem"),
                                                          "/etc/ssl/w.key")
    assert cfg.store == f"sqlite://{folder / 'hub.db'}"


def test_the_metrics_port_is_off_unless_given():
    assert hubconfig.parse(tomllib.loads(HUB)).metrics_port == 0
    assert hubconfig.parse(tomllib.loads(HUB + "[metrics]\nport = 9109\n")).metrics_port == 9109


def test_the_example_file_is_what_the_schema_writes_and_parses():
    example = ROOT / "hub/hub.toml"
    assert example.read_text() == configdoc.gateway_files()[example], "run python -m govedge.tools.dev.configdoc"
    cfg = hubconfig.load(example)
    assert cfg.share_group == "govedge-hub" and cfg.mqtt.tls and cfg.metrics_port == 0
    text = example.read_text()
    for section in hubconfig.SCHEMA:
        assert f"\n[{section.name}]\n" in text
        for key in section.keys:
            assert f"\n{key.name} = " in text or f"\n# {key.name} = " in text, (section.name, key.name)
    assert "## hub.toml" in (ROOT / "docs/CONFIG.md").read_text()


# -- govedge hub check -------------------------------------------------------------------------


def check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "govedge.tools.cli", "hub", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def lines_of(out: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    return {line[6:21].strip(): (line[:5].strip(), line[22:]) for line in out.stdout.splitlines()}


def a_hub(folder: Path, broker_port: int, store: str = "hub.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Registry(path=folder / "registry.json").save()
    Gateways(path=folder / "gateways.json").save()
    path = folder / "hub.toml"
    path.write_text(HUB + f'[store]\nurl = "{store}"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
                          'client_id = "hub-worker-1"\n')
    return path


@pytest.fixture
def mosquitto(tmp_path):
    if not mosquitto_binary():
        pytest.skip("mosquitto is not installed (make test installs it)")
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


def test_check_passes_a_ready_hub_and_leaves_a_new_store_unmade(tmp_path, mosquitto):
    config = a_hub(tmp_path / "hub", mosquitto.port)
    out = check(config)
    assert out.returncode == 0, out.stdout + out.stderr
    found = lines_of(out)
    assert found["configuration"] == ("ok", f"{config} is valid")
    assert found["gateways"] == ("ok", f"0 gateways in {tmp_path / 'hub/gateways.json'}")
    assert found["store"] == ("ok", f"{tmp_path / 'hub/hub.db'} is made at the first start "
                                    f"({tmp_path / 'hub'} writable)")
    assert found["broker"] == ("ok", f"MQTT login to 127.0.0.1:{mosquitto.port} accepted")
    assert found["report key"] == ("--", f"{tmp_path / 'hub/hub-key.pem'} not made yet: reports need it (govedge "
                                         "hub keygen --config ...); the workers do not")
    assert not (tmp_path / "hub/hub.db").exists()  # a check changes nothing
    HubStore(f"sqlite://{tmp_path / 'hub/hub.db'}").db.close()
    found = lines_of(check(config))
    assert found["store"][0] == "ok" and found["store"][1].startswith(f"{tmp_path / 'hub/hub.db'}: SQLite, ")


def test_check_names_a_missing_broker_and_a_store_that_is_not_one(tmp_path):
    nothing = free_port()
    config = a_hub(tmp_path / "hub", nothing)
    (tmp_path / "hub/hub.db").write_bytes(b"not a database, " * 100)
    out = check(config)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    found = lines_of(out)
    assert found["broker"][0] == "FAIL" and found["broker"][1].startswith(f"127.0.0.1:{nothing} unreachable: ")
    assert "check [mqtt] host and port" in found["broker"][1]
    assert found["store"][0] == "FAIL" and "is it the hub's SQLite store ([store] url)?" in found["store"][1]


def test_check_of_an_invalid_configuration_says_why_in_one_line_and_exits_2(tmp_path):
    config = a_hub(tmp_path / "hub", free_port())
    config.write_text(config.read_text() + "[metrics]\nprot = 9109\n")
    out = check(config)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"govedge hub check: {config}: [metrics] prot: unknown key; did you mean port?\n"


def test_check_logs_in_to_postgresql_and_names_a_wrong_database(tmp_path, mosquitto):
    from support.postgres import PostgresServer

    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        url = server.new_database()
        found = lines_of(check(a_hub(tmp_path / "hub", mosquitto.port, url)))
        assert found["store"][0] == "ok" and found["store"][1].endswith("answers"), found["store"]
        wrong = url.rsplit("/", 1)[0] + "/no_such_database"
        out = check(a_hub(tmp_path / "hub2", mosquitto.port, wrong))
        assert out.returncode == 1
        mark, text = lines_of(out)["store"]
        assert mark == "FAIL" and text.startswith("cannot connect to PostgreSQL at ") and "no_such_database" in text
    finally:
        server.stop()
