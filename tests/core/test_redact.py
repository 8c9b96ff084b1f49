"""The one redaction rule: no password, token or RPC path reaches a message, whatever shape it comes in."""

from __future__ import annotations

import pytest

from govedge.core import redact

SECRETS = ("Pw-Secret1", "p@ss-Secret2", "Query-Secret3", "PathToken4deadbeef", "Frag-Secret5")


@pytest.mark.parametrize("dsn, secrets, shown", [
    ("postgresql://hub:Pw-Secret1@db.example:5432/govedge", ["Pw-Secret1"], "postgresql://hub:***@db.example:5432/govedge"),
    # a password holding '@' (the host is after the last one)
    ("postgresql://hub:p@ss-Secret2@db.example/govedge", ["p@ss-Secret2", "ss-Secret2"], "postgresql://hub:***@db.example/govedge"),
    # a password in the query, beside harmless parameters
    ("postgres://hub@db.example/govedge?sslmode=require&password=Query-Secret3",
     ["Query-Secret3"], "postgres://hub@db.example/govedge?sslmode=require&password=***"),
    ("postgresql://db.example/govedge?PassWord=Query-Secret3&application_name=hub",
     ["Query-Secret3"], "postgresql://db.example/govedge?PassWord=***&application_name=hub"),
    # an unencoded '/' in the password: over-redacting is the safe mistake
    ("postgresql://hub:Pw/Secret1@db.example/govedge", ["Pw/Secret1", "Secret1"], "postgresql://hub:***@db.example/govedge"),
    # libpq's key=value form, quoted and not
    ("host=db.example user=hub password=Pw-Secret1 dbname=govedge", ["Pw-Secret1"],
     "host=db.example user=hub password=*** dbname=govedge"),
    ("host=db.example password = 'p@ss Secret2' dbname=govedge", ["p@ss Secret2", "Secret2"],
     "host=db.example password = *** dbname=govedge"),
    ("sqlite:///var/lib/govedge/hub.db", [], "sqlite:///var/lib/govedge/hub.db"),
])
def test_a_dsn_is_shown_without_its_password(dsn, secrets, shown):
    assert redact.dsn(dsn) == shown
    for secret in secrets:
        assert secret not in redact.dsn(dsn)


@pytest.mark.parametrize("rpc, shown", [
    ("https://rpc-user:Pw-Secret1@mainnet.example/v3/PathToken4deadbeef", "https://mainnet.example/…"),
    ("https://mainnet.example:8545/v3/PathToken4deadbeef?apikey=Query-Secret3#Frag-Secret5", "https://mainnet.example:8545/…"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
    ("http://[::1]:8545/PathToken4deadbeef", "http://[::1]:8545/…"),
    ("not a url with PathToken4deadbeef", "***"),
])
def test_an_rpc_endpoint_is_shown_as_scheme_host_and_port(rpc, shown):
    assert redact.endpoint(rpc) == shown


def test_secret_query_parameters_and_userinfo_leave_a_url_its_path():
    shown = redact.url("https://u:Pw-Secret1@observer.example/api/v1?token=Query-Secret3&x=1&access_token=a&"
                       "API-Key=b&client_secret=c&page=2")
    assert shown == ("https://u:***@observer.example/api/v1?token=***&x=1&access_token=***&API-Key=***&"
                     "client_secret=***&page=2")


@pytest.mark.parametrize("name, secret", [("password", True), ("apikey", True), ("api_key", True),
                                          ("X-Api-Key", True), ("access_token", True), ("sslpassword", True),
                                          ("secret", True), ("sslmode", False), ("page", False), ("user", False)])
def test_which_names_carry_secrets(name, secret):
    assert redact.is_secret_name(name) is secret


def test_free_text_loses_every_secret_of_the_endpoints_it_was_given():
    rpc = "https://rpc-user:Pw-Secret1@mainnet.example:8545/v3/PathToken4deadbeef?apikey=Query-Secret3"
    said = ("HTTPSConnectionPool(host='mainnet.example', port=8545): Max retries exceeded with url: "
            "/v3/PathToken4deadbeef?apikey=Query-Secret3 (Caused by ...) "
            f"while asking {rpc}; basic auth Pw-Secret1 refused; token%2F PathToken4deadbeef")
    text = redact.text(said, rpc)
    for secret in SECRETS:
        assert secret not in text
    assert "mainnet.example" in text and "Max retries exceeded" in text


def test_free_text_loses_urls_passwords_and_key_values_it_was_not_told_of():
    said = ("could not connect to postgresql://hub:p@ss-Secret2@db.example/govedge?password=Query-Secret3 "
            "(dsn: host=db.example password=Pw-Secret1)")
    text = redact.text(said)
    for secret in ("p@ss-Secret2", "ss-Secret2", "Query-Secret3", "Pw-Secret1"):
        assert secret not in text
    assert "db.example" in text


def test_a_dsn_given_as_known_keeps_its_database_name():
    dsn = "postgresql://hub:p%40ss-Secret2@db.example/govedge?password=Query-Secret3"
    text = redact.text('password authentication failed for user "hub" (p@ss-Secret2) on govedge', dsn, paths=False)
    assert "p@ss-Secret2" not in text and "govedge" in text


@pytest.mark.parametrize("nasty", ["", "://", "@@@", "postgresql://", "postgresql://@", "http://:@/", "?password=",
                                   "password=", "password='unterminated", "\x00\n\udcff", "a" * 10_000])
def test_nothing_raises(nasty):
    for f in (redact.url, redact.endpoint, redact.dsn, redact.text, redact.secret_parts):
        assert isinstance(f(nasty), (str, list))
    assert isinstance(redact.text("some text", nasty), str)


def test_the_check_on_what_services_write_finds_a_secret_of_their_configuration(tmp_path):
    """tests/conftest.py runs this check after every test that starts `govedge gateway run` or `hub run`."""
    from support.deploy import CliProcess

    config = tmp_path / "gateway.toml"
    config.write_text('[hub]\nhost = "hub.example"\npassword = "hub-secret-1"\n'
                      '[anchor.evm]\nrpc_url = "https://rpc.example/v3/0123456789abcdef"\n')
    process = CliProcess(["gateway", "run", "--config", str(config)], tmp_path / "gateway.log")
    process.log_path.write_text("INFO gateway: uplink to hub.example:8883 connected\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "live.json").write_text('{"anchor": "https://rpc.example/…: unreachable"}')
    assert process.leaked() == []
    (tmp_path / "data" / "live.json").write_text('{"anchor": "https://rpc.example/v3/0123456789abcdef: down"}')
    process.log_path.write_text("ERROR could not log in as govedge with hub-secret-1\n")
    assert process.leaked() == [f"{tmp_path / 'gateway.log'}: hub-se...",
                                f"{tmp_path / 'data' / 'live.json'}: 012345..."]
