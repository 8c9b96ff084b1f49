"""The configuration schema (govedge.core.config): every class of mistake in a file is named by file,
section and key, with what the key takes; paths are the file's folder's; the example and the docs
tables are made from the same keys."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from govedge.core import config
from govedge.core.config import ConfigError, Key, Section

SCHEMA = (
    Section("batch", (
        Key("interval_s", float, 10.0, "a batch at least this often", above=0),
        Key("max_readings", int, 500, "or as soon as this many wait", min=1),
        Key("mode", str, "raw", "what goes in", choices=("raw", "aggregate")),
    )),
    Section("metrics", (Key("port", int, 0, "Prometheus endpoint", min=0, max=65535, example=9108),)),
    Section("site", (
        Key("id", str, help="the site", required=True, pattern=re.compile(r"[a-z0-9-]+"),
            pattern_text="lower-case letters, digits and '-'", example="site-1"),
        Key("registry", str, help="the registry", required=True, path=True, example="registry.json"),
        Key("workers", int, "auto", "processes", min=0, max=64, words=("auto",)),
        Key("tls", bool, False, "TLS"),
        Key("ports", list, [], "serial ports"),
        Key("password", str, None, "its password", secret=True, example="..."),
    )),
    Section("site.mqtt", config.mqtt_keys(1883)),
    Section("filter", help="checked by its stage", free=True, example="# [filter.quantities.temp]\n"),
)
MINIMAL = {"site": {"id": "site-1", "registry": "registry.json"}}


def parsed(doc: dict, base: Path = Path("/etc/govedge")) -> dict:
    return config.parse({**MINIMAL, **doc} if "site" not in doc else doc, SCHEMA, base)


def error_of(doc: dict, file: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        config.parse({**MINIMAL, **doc} if "site" not in doc else doc, SCHEMA, Path("."), file)
    return str(err.value)


def test_defaults_fill_every_key_and_paths_are_the_files_folder():
    v = parsed({})
    assert v["batch"] == {"interval_s": 10.0, "max_readings": 500, "mode": "raw"}
    assert v["site"]["registry"] == Path("/etc/govedge/registry.json")
    assert v["site"]["workers"] == "auto" and v["site"]["password"] is None
    assert v["site.mqtt"]["port"] == 1883 and v["site.mqtt"]["ca"] is None
    assert v["filter"] == {}


def test_a_misspelt_key_is_named_with_the_key_it_resembles():
    assert error_of({"batch": {"intervall_s": 3}}, "gateway.toml") == (
        "gateway.toml: [batch] intervall_s: unknown key; did you mean interval_s?")


def test_an_unknown_key_like_no_other_lists_the_known_ones():
    assert error_of({"batch": {"colour": "red"}}) == (
        "[batch] colour: unknown key; known: interval_s, max_readings, mode")


def test_a_misspelt_key_is_named_before_a_missing_one_it_may_explain():
    assert error_of({"site": {"id": "s", "registy": "r.json"}}) == (
        "[site] registy: unknown key; did you mean registry?")


def test_an_unknown_section_is_named_with_the_section_it_resembles():
    assert error_of({"bacth": {"interval_s": 3}}) == "[bacth]: unknown section; did you mean [batch]?"
    assert error_of({"site": {**MINIMAL["site"], "mqqt": {"host": "h"}}}) == (
        "[site] mqqt: unknown key; did you mean [site.mqtt]?")


def test_a_value_of_the_wrong_type_names_key_value_and_what_it_takes():
    assert error_of({"metrics": {"port": "9108x"}}) == '[metrics] port = "9108x": expected a whole number 0..65535'
    assert error_of({"batch": {"interval_s": "ten"}}) == '[batch] interval_s = "ten": expected a number above 0'
    assert error_of({"site": {"id": 5, "registry": "r"}}) == (
        "[site] id = 5: expected a string of lower-case letters, digits and '-'")
    assert error_of({"batch": {"max_readings": 2.5}}) == (
        "[batch] max_readings = 2.5: expected a whole number of at least 1")
    assert error_of({"site": {**MINIMAL["site"], "ports": "/dev/ttyUSB0"}}) == (
        '[site] ports = "/dev/ttyUSB0": expected a list of strings, e.g. ["/dev/ttyUSB0"]')
    assert error_of({"site": {**MINIMAL["site"], "tls": "yes"}}) == '[site] tls = "yes": expected true or false'


def test_true_is_not_a_number():
    assert error_of({"metrics": {"port": True}}) == "[metrics] port = true: expected a whole number 0..65535"
    assert error_of({"batch": {"interval_s": True}}) == "[batch] interval_s = true: expected a number above 0"
    assert error_of({"site": {**MINIMAL["site"], "workers": False}}) == (
        '[site] workers = false: expected "auto" or a whole number 0..64')


def test_ranges_and_choices_are_checked():
    assert error_of({"metrics": {"port": 65536}}) == "[metrics] port = 65536: expected a whole number 0..65535"
    assert error_of({"batch": {"interval_s": 0}}) == "[batch] interval_s = 0: expected a number above 0"
    assert error_of({"batch": {"mode": "cooked"}}) == '[batch] mode = "cooked": expected one of "raw", "aggregate"'
    assert error_of({"site": {"id": "Site 1", "registry": "r"}}).startswith('[site] id = "Site 1": expected')
    assert error_of({"site": {**MINIMAL["site"], "workers": "many"}}) == (
        '[site] workers = "many": expected "auto" or a whole number 0..64')
    assert parsed({"batch": {"interval_s": 3}})["batch"]["interval_s"] == 3.0  # a whole number is a number


def test_a_missing_required_key_is_named():
    assert error_of({"site": {"id": "s"}}, "site.toml") == "site.toml: [site] registry is missing (the registry)"


def test_a_secret_is_never_shown_back():
    message = error_of({"site": {**MINIMAL["site"], "password": 123456789}})
    assert message == "[site] password = (hidden): expected a string" and "123456789" not in message


def test_a_relative_tls_path_is_the_files_folder_an_absolute_one_stays():
    v = parsed({"site": {**MINIMAL["site"], "mqtt": {"tls": True, "ca": "tls/ca.pem", "cert": "/etc/ssl/c.pem"}}},
               base=Path("/etc/govedge"))
    assert v["site.mqtt"]["ca"] == Path("/etc/govedge/tls/ca.pem")
    assert v["site.mqtt"]["cert"] == Path("/etc/ssl/c.pem")
    ep = config.endpoint_of(v["site.mqtt"])
    assert (ep.ca, ep.cert, ep.key, ep.tls) == ("/etc/govedge/tls/ca.pem", "/etc/ssl/c.pem", None, True)


def test_an_empty_path_is_refused():
    assert error_of({"site": {"id": "s", "registry": ""}}) == (
        '[site] registry = "": expected a path, not an empty string')


def test_a_free_section_is_handed_on_as_written():
    rules = {"quantities": {"temp": {"min": -40}}}
    assert parsed({"filter": rules})["filter"] == rules


def test_a_section_that_is_not_a_table_is_named():
    assert error_of({"batch": 3}) == "[batch] must be a table (a section [batch]), not 3"


def test_the_example_file_parses_to_its_own_values_and_shows_every_key():
    text = config.example(SCHEMA, "site.toml: an example")
    v = config.parse(tomllib.loads(text), SCHEMA, Path("/x"))
    assert v["metrics"]["port"] == 9108 and v["site"]["id"] == "site-1" and v["batch"]["interval_s"] == 10.0
    for section in SCHEMA:
        assert f"[{section.name}]" in text
        for key in section.keys:
            assert re.search(rf"^(# )?{key.name} = ", text, re.M), key.name
    assert '# password = "..."' in text  # no default: shown, commented out


def test_the_docs_table_has_a_row_per_key_with_its_type_and_default():
    table = config.markdown(SCHEMA)
    assert "| `interval_s` | number above 0 | `10` | a batch at least this often |" in table
    assert "| `port` | whole number 0..65535 | `0` | Prometheus endpoint |" in table
    assert "| `id` | string | required | the site |" in table
    assert "| `workers` | \"auto\" or whole number 0..64 | `\"auto\"` | processes |" in table
    assert "| `password` | string | none | its password; a secret: never shown in errors or logs |" in table
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(s.keys) for s in SCHEMA)


def test_reading_a_file_names_what_is_wrong_with_it(tmp_path):
    with pytest.raises(ConfigError, match=r"^.*missing.toml not found$"):
        config.read_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"is a folder, not a configuration file$"):
        config.read_toml(tmp_path)
    (tmp_path / "bad.toml").write_text("[batch\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: "):
        config.read_toml(tmp_path / "bad.toml")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.toml is not a text file"):
        config.read_toml(tmp_path / "binary.toml")
