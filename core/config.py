"""What the gateway's and the hub's configurations share: reading TOML, the schema every section of
their files is checked against, an MQTT endpoint, a number of worker processes, and the error that
names the key that is wrong.

One schema per file (a tuple of Section, each a tuple of Key) drives four things, so that they cannot
drift apart: parsing (types, ranges, defaults, paths made relative to the file's folder), the errors
(the file, the section and the key, with a suggestion for a misspelt one), the docs tables
(docs/CONFIG.md) and the example files (gateway/gateway.toml, hub/hub.toml); ``python -m
govedge.tools.dev.configdoc`` writes the last two from the schema, a test holds them to it."""

from __future__ import annotations

import difflib
import json
import re
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import GovedgeError


class ConfigError(GovedgeError, ValueError):
    """A configuration that cannot be used; the text names the file, the key and what is wrong."""

    code = "config"


# -- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of a section: its type, its default, the values it may take and what it means.

    ``type`` is str, int, float (any number; an int is taken), bool or list (of strings); a bool is
    never taken for a number. ``default`` None: the key has no value unless given (``shown`` says what
    the program does then); ``required``: the file must give it. ``path``: a file or folder, relative
    to the configuration file's folder (under systemd the working directory is /). ``secret``: never
    shown back (the errors say "(hidden)"). ``example``: the value the example file shows, when it is
    not the default; a key with neither is shown commented out."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    required: bool = False
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive: "above 0" for a period or a rate
    choices: tuple = ()
    words: tuple = ()  # strings taken besides the type's values, e.g. "auto" for a number of workers
    pattern: re.Pattern | None = None
    pattern_text: str = ""  # what the pattern takes, in words
    path: bool = False
    secret: bool = False
    example: Any = None
    shown: str | None = None  # the default in the docs table when it is computed, e.g. "the folder of this file"

    def expected(self) -> str:
        """What the key takes, in the words of an error message."""
        if self.choices:
            return "one of " + ", ".join(_toml(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is list:
            return 'a list of strings, e.g. ["/dev/ttyUSB0"]'
        if self.type is str:
            if self.pattern is not None:
                return f"a string of {self.pattern_text}"
            return "a path (a string)" if self.path else "a string"
        text = "a whole number" if self.type is int else "a number"
        if self.min is not None and self.max is not None:
            text += f" {_num(self.min)}..{_num(self.max)}"
        elif self.min is not None:
            text += f" of at least {_num(self.min)}"
        elif self.above is not None:
            text += f" above {_num(self.above)}"
        elif self.max is not None:
            text += f" of at most {_num(self.max)}"
        return " or ".join([*(_toml(w) for w in self.words), text])

    def type_text(self) -> str:
        """The type column of the docs table."""
        if self.choices:
            return " or ".join(_toml(c) for c in self.choices)
        if self.type in (int, float):
            return self.expected().removeprefix("a ").replace("a whole number", "whole number")
        return {bool: "true/false", list: "list of strings"}.get(self.type) or ("path" if self.path else "string")

    def check(self, value: Any, where: str) -> Any:
        """The value, checked (and a number of seconds made a float); a ConfigError names the key."""
        def wrong(why: str = "") -> ConfigError:
            shown = "(hidden)" if self.secret else _toml(value)
            return ConfigError(f"{where} {self.name} = {shown}: expected {why or self.expected()}")

        if isinstance(value, str) and value in self.words:
            return value
        if self.type is bool:
            if type(value) is not bool:
                raise wrong()
            return value
        if self.type in (int, float):
            if type(value) is bool or not isinstance(value, int if self.type is int else (int, float)):
                raise wrong()
            if ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                    or (self.above is not None and not value > self.above) or value != value):
                raise wrong()
            return float(value) if self.type is float else value
        if self.type is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise wrong()
            return list(value)
        if not isinstance(value, str):
            raise wrong()
        if self.choices and value not in self.choices:
            raise wrong()
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise wrong()
        if self.path and not value:
            raise wrong("a path, not an empty string")
        return value


@dataclass(frozen=True)
class Section:
    """One table of the file, ``name`` as in its header ("batch", "ingest.mqtt"). A ``free`` section is
    checked by the module that uses it (the gateway's [filter] and [aggregate]); ``example`` holds the
    lines the example file shows under its header instead of its keys."""

    name: str
    keys: tuple[Key, ...] = ()
    help: str = ""
    free: bool = False
    example: str = ""
    required: bool = True  # False: the required keys are asked for by whoever uses the section

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)


def _num(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def _toml(value: Any) -> str:
    """A value as TOML writes it (and as an error shows it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, float):
        return _num(value) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 1_000_000 else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _suggest(word: str, known: Iterable[str], show: Callable[[str], str] = str) -> str:
    """The nearest known name (difflib, as git and pip do it), or the list of them all."""
    known = sorted(known)
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {show(close[0])}?"
    return "; known: " + ", ".join(sorted(show(k) for k in known)) if known else ""


def parse(doc: dict, schema: tuple[Section, ...], base: Path = Path("."), file: Path | str | None = None
          ) -> dict[str, dict[str, Any]]:
    """``doc`` (a TOML document) checked against ``schema``: {section name: {key: value}}, every key of
    every section present (its default, None if it has none), path keys made relative to ``base``
    (as Path), free sections as given. A ConfigError names the file (if given), the section and the key."""
    try:
        return _parse(doc, schema, base)
    except ConfigError as exc:
        if file is None:
            raise
        raise ConfigError(f"{file}: {exc}") from None


def _parse(doc: dict, schema: tuple[Section, ...], base: Path) -> dict[str, dict[str, Any]]:
    sections = {s.name: s for s in schema}
    given: dict[str, dict] = {}

    def walk(table: dict, prefix: str) -> None:
        for name, value in table.items():
            full = f"{prefix}{name}"
            inner = [s for s in sections if s.startswith(full + ".")]
            if full not in sections and not inner:
                raise ConfigError(f"[{full}]: unknown section" + _suggest(full, sections, lambda s: f"[{s}]"))
            if not isinstance(value, dict):
                raise ConfigError(f"[{full}] must be a table (a section [{full}]), not {_toml(value)}")
            section = sections.get(full)
            if section is None:  # only holds other sections, like [ingest]
                walk(value, full + ".")
                continue
            if section.free:
                given[full] = value
                continue
            own = {}
            for key, v in value.items():
                if isinstance(v, dict) and f"{full}.{key}" in sections:
                    walk({key: v}, full + ".")
                else:
                    own[key] = v
            given[full] = own

    walk(doc, "")
    for section in schema:  # a misspelt key first: it is often why another seems missing
        known = {k.name: k.name for k in section.keys}
        known.update({s.removeprefix(section.name + "."): f"[{s}]" for s in sections
                      if s.startswith(section.name + ".") and "." not in s.removeprefix(section.name + ".")})
        for name in given.get(section.name, {}) if not section.free else ():
            if name not in known:
                raise ConfigError(f"[{section.name}] {name}: unknown key" + _suggest(name, known, known.get))
    out: dict[str, dict[str, Any]] = {}
    for section in schema:
        values = given.get(section.name, {})
        if section.free:
            out[section.name] = dict(values)
            continue
        where = f"[{section.name}]"
        out[section.name] = checked = {}
        for key in section.keys:
            if key.name not in values:
                if key.required and section.required:
                    raise ConfigError(f"{where} {key.name} is missing" + (f" ({key.help})" if key.help else ""))
                value = key.default
            else:
                value = key.check(values[key.name], where)
            if key.path and isinstance(value, str) and value not in key.words:
                value = base / value
            checked[key.name] = value
    return out


def required(section: Section, values: dict[str, Any]) -> None:
    """The required keys of a section whose ``required`` is False, asked for when it is used."""
    for key in section.keys:
        if key.required and values.get(key.name) is None:
            raise ConfigError(f"[{section.name}] {key.name} is missing" + (f" ({key.help})" if key.help else ""))


# -- the docs tables and the example file ------------------------------------------------------


def markdown(schema: tuple[Section, ...]) -> str:
    """One Markdown table per section: key, type, default, meaning."""
    out = []
    for section in schema:
        out.append(f"### `[{section.name}]`\n")
        if section.help:
            out.append(section.help + "\n")
        if section.free:
            continue
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key in section.keys:
            if key.required:
                default = "required" if section.required else "required when used"
            else:
                default = key.shown if key.shown is not None else f"`{_toml(key.default)}`" if key.default is not None \
                    else "none"
            meaning = key.help + ("; a secret: never shown in errors or logs" if key.secret else "")
            meaning = meaning.replace("|", "\\|")
            out.append(f"| `{key.name}` | {key.type_text()} | {default} | {meaning} |")
        out.append("")
    return "\n".join(out)


def example(schema: tuple[Section, ...], header: str) -> str:
    """The example file: every section and key with its help as comments and its example or default
    value (commented out when it has neither)."""
    out = [*(f"# {line}".rstrip() for line in header.splitlines()), ""]
    for section in schema:
        out.append(f"[{section.name}]")
        out += _comment(section.help)
        if section.free or section.example:
            out += section.example.rstrip("\n").splitlines()
        for key in section.keys:
            out += _comment(key.help + (f" (default: {key.shown.strip('`')})" if key.shown and key.example is not None
                                        else ""))
            value = key.example if key.example is not None else key.default
            if value is None:
                out.append(f"# {key.name} = ")
            elif key.example is not None and key.default is None and not key.required:
                out.append(f"# {key.name} = {_toml(value)}")
            else:
                out.append(f"{key.name} = {_toml(value)}")
        out.append("")
    return "\n".join(out)


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, 104)] if text else []


# -- what both files have ----------------------------------------------------------------------



@dataclass
class MqttEndpoint:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None  # PEM file of the CA the broker's certificate chains to
    cert: str | None = None  # client certificate (PEM), for brokers that ask for one
    key: str | None = None
    keepalive: int = 60


def mqtt_keys(default_port: int, host: str = "127.0.0.1", examples: dict | None = None) -> tuple[Key, ...]:
    """The keys of a section that names an MQTT broker (MqttEndpoint's fields); ``examples``: the
    values the example file shows."""
    ex = examples or {}
    return (
        Key("host", str, host, "the broker's host name or address", example=ex.get("host")),
        Key("port", int, default_port, "its TCP port", min=1, max=65535, example=ex.get("port")),
        Key("client_id", str, None, "the client id; fixed, so that the broker keeps this client's session",
            shown=ex.get("client_id_shown", "none"), example=ex.get("client_id")),
        Key("user", str, None, "the login on the broker", example=ex.get("user")),
        Key("password", str, None, "its password (keep this file owner-only)", secret=True,
            example=ex.get("password")),
        Key("tls", bool, False, "TLS to the broker", example=ex.get("tls")),
        Key("ca", str, None, "PEM file of the CA the broker's certificate chains to (default: the system's CAs)",
            path=True, example=ex.get("ca", "ca.pem")),
        Key("cert", str, None, "client certificate (PEM), for a broker that asks for one", path=True,
            example=ex.get("cert", "client.pem")),
        Key("key", str, None, "the client certificate's private key (PEM)", path=True,
            example=ex.get("key", "client.key")),
        Key("keepalive", int, 60, "seconds between MQTT keepalive pings (0: none)", min=0, max=65535),
    )


def endpoint_of(values: dict[str, Any]) -> MqttEndpoint:
    """An MqttEndpoint from a section parsed with mqtt_keys() (paths made strings, as paho wants them)."""
    fields = {name: values[name] for name in MqttEndpoint.__dataclass_fields__}
    for name in ("ca", "cert", "key"):
        if fields[name] is not None:
            fields[name] = str(fields[name])
    return MqttEndpoint(**{**fields, "client_id": fields["client_id"] or ""})


MAX_WORKERS = 64


def workers(value) -> int:
    """A number of processes checking signatures: "auto" is one per core, at most 4 (the key's check
    has taken anything else)."""
    if value == "auto":
        from .verifypool import default_workers

        return default_workers()
    return value


def read_toml(path: Path) -> dict:
    """The TOML document at ``path``; a ConfigError says in one line what is wrong with the file."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a configuration file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user (run as root or the service's user)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
