"""Anchor backends are found by name (govedge.anchor): the names, the settings each one takes, and
what a wrong [anchor] section says; gateway.toml and the docs name every setting a backend has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from govedge import anchor
from govedge.core.config import ConfigError
from govedge.gateway import config as gwconfig

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_TOML = ROOT / "gateway" / "gateway.toml"


def gateway_doc(anchor_section: str) -> dict:
    import tomllib

    return tomllib.loads('[gateway]\nid = "gw-1"\nkey_file = "k"\ndata_dir = "d"\nregistry = "r"\n' + anchor_section)


def test_built_in_backends_are_registered_by_name():
    assert anchor.backend_names() == ("rest", "evm")
    for name in anchor.backend_names():
        backend = anchor.lookup(name)
        assert backend.name == name and backend.address.type == "url" and backend.address.required


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        anchor.lookup("ipfs")
    assert str(err.value) == "[anchor] backend must be 'rest', 'evm' or 'none', not 'ipfs'"
    with pytest.raises(ConfigError) as err:
        gwconfig.parse(gateway_doc('[anchor]\nbackend = "ipfs"\n'))
    assert str(err.value) == '[anchor] backend = "ipfs": expected one of "rest", "evm", "none"'


def test_a_missing_required_setting_is_named():
    with pytest.raises(ConfigError) as err:
        anchor.settings_of("evm", {"rpc_url": "http://127.0.0.1:8545", "key_file": "a.key"}, Path("/etc/govedge"))
    assert str(err.value).startswith("[anchor.evm] contract is missing")
    with pytest.raises(ConfigError, match=r"^\[anchor.rest\] url is missing"):
        gwconfig.parse(gateway_doc('[anchor]\nbackend = "rest"\n[anchor.rest]\ntimeout_s = 3\n'))


def test_an_unknown_setting_is_named_with_the_backend_keys():
    with pytest.raises(ConfigError) as err:
        gwconfig.parse(gateway_doc('[anchor]\nbackend = "rest"\n[anchor.rest]\nurl = "https://o.example"\nurls = 1\n'))
    assert str(err.value) == "[anchor.rest] urls: unknown key; did you mean url?"
    with pytest.raises(ConfigError) as err:
        gwconfig.parse(gateway_doc('[anchor]\n[anchor.ipfs]\nurl = 1\n'))
    assert str(err.value) == "[anchor] ipfs: unknown key; known: [anchor.evm], [anchor.rest], backend, epoch_s"
    with pytest.raises(ConfigError) as err:  # a setting of the wrong type, whichever backend is chosen
        gwconfig.parse(gateway_doc('[anchor.evm]\nconfirmations = "two"\n'))
    assert str(err.value) == '[anchor.evm] confirmations = "two": expected a whole number of at least 0'


def test_file_settings_are_relative_to_the_config_folder():
    cfg = gwconfig.parse(gateway_doc('[anchor]\nbackend = "evm"\n[anchor.evm]\nrpc_url = "http://127.0.0.1:8545"\n'
                                     'contract = "0x0000000000000000000000000000000000000001"\nkey_file = "a.key"\n'),
                         base=Path("/etc/govedge"))
    assert cfg.anchor["key_file"] == "/etc/govedge/a.key" and cfg.anchor["rpc_url"] == "http://127.0.0.1:8545"


def test_a_second_backend_of_a_known_name_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        anchor.register("rest", description="", settings=(), make=None, audit=None, doc="")


def test_naming_the_backends_imports_no_chain_client():
    # web3 takes a second and a half to import, and it and rfc8785 come with extras: the hub, a gateway
    # without anchoring and the command line (whatever is installed) never import them
    code = ("import sys; from govedge import anchor; from govedge.gateway import config; anchor.backend_names(); "
            "config.parse({'gateway': {'id': 'g', 'key_file': 'k', 'data_dir': 'd', 'registry': 'r'}}); "
            "from govedge.tools import cli; cli.build_parser(); "
            "print(sorted(m for m in ('web3', 'eth_account', 'eth_tester', 'rfc8785') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def toml_section_keys(name: str) -> list[str]:
    """The keys, commented out or not, of gateway.toml's [anchor.<name>] section."""
    text = GATEWAY_TOML.read_text()
    section = text.split(f"[anchor.{name}]", 1)[1].split("\n[", 1)[0]
    return [m.group(1) for m in re.finditer(r"^#?\s*([a-z_]+)\s*=", section, re.MULTILINE)]


@pytest.mark.parametrize("name", ["rest", "evm"])
def test_gateway_toml_shows_every_setting_of_each_backend(name):
    assert name in anchor.backend_names()
    assert toml_section_keys(name) == [s.key for s in anchor.lookup(name).settings]


# docs/ANCHORING.md (the EVM chain) has no table of its [anchor.evm] settings yet
@pytest.mark.parametrize("name", ["rest"])
def test_the_backend_doc_tables_its_settings_as_registered(name):
    backend = anchor.lookup(name)
    text = (ROOT / backend.doc).read_text()
    table = text.split("### The gateway's settings", 1)[1].split("| key | type | required | default | what |", 1)[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.strip().splitlines()[1:] if line.startswith("|")]
    assert rows == [[f"`{s.key}`", s.type, "yes" if s.required else "no", "" if s.default is None else str(s.default),
                     s.description] for s in backend.settings]


def test_verify_asks_the_chain_whose_address_is_given_and_names_what_it_lacks(tmp_path, capsys):
    from govedge.core.registry import Registry
    from govedge.tools import cli

    registry = Registry(path=tmp_path / "registry.json")
    registry.save()
    (tmp_path / "bundle.json").write_text("{}")
    args = ["verify", str(tmp_path / "bundle.json"), "--registry", str(tmp_path / "registry.json")]
    assert cli.main(args + ["--rpc", "http://127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == ("govedge verify: --rpc needs --contract, the anchor contract's address you "
                                       "trust\n")
    assert cli.main(args + ["--rpc", "http://127.0.0.1:1", "--observer", "http://127.0.0.1:1"]) == 2
    assert "give one chain to ask" in capsys.readouterr().err
