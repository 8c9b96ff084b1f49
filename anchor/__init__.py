"""Anchoring on the govchain: one interface, backends registered by name.

The gateway anchors the RFC 9162 tree head of each epoch's batches; an auditor
later checks that the same root is on the chain. Backends:

- ``govedge.anchor.rest``: REST hash anchoring, the way the GovChain NRW chain is
  used (a signed hash-creation transaction posted to an observer node, looked
  up later by its hash; docs/ANCHOR-REST.md).
- ``govedge.anchor.evm``: an Ethereum-compatible permissioned chain (Hyperledger
  Besu style) over JSON-RPC, through a small anchor contract that emits one event
  per root (anchor/contracts/; docs/ANCHORING.md).

Anchoring is asynchronous on both: ``submit`` hands the root to the chain and
returns a pending receipt; ``confirm`` is asked again later until the chain has
put it in a block. ``lookup`` is the auditor's question, asked of the chain
alone: is this root anchored, and where?

Each backend module registers itself (``register``) with the settings of its
``[anchor.<name>]`` section in gateway.toml and two factories: the gateway's
backend, from the gateway's configuration, and an auditor's, which only looks
roots up. The configuration check, the gateway, ``govedge gateway install`` and
``govedge verify`` find a backend by its name (``lookup``) and ask nothing else
of it. Importing a backend module is cheap: what a chain client needs (web3 for
the EVM) is imported when a backend is made.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from govedge.core import config as schema
from govedge.core.config import ConfigError
# the receipt, the interface and its error are shared with every stage (govedge.core.receipt)
from govedge.core.receipt import AnchorBackend, AnchorError, Receipt

__all__ = ["AnchorBackend", "AnchorError", "Receipt", "Setting", "Backend", "NONE", "register", "backend_names",
           "lookup", "settings_of", "section_of"]

NONE = "none"  # the [anchor] backend that anchors nothing: epochs are built, not anchored
BUILT_IN = ("rest", "evm")  # the backend modules of this package, each registering itself when imported


@dataclass(frozen=True)
class Setting:
    """One key of a backend's ``[anchor.<name>]`` section (the shape of a Fledge plugin_info item)."""

    key: str
    type: str  # "url", "file" (relative to gateway.toml's folder), "string", "integer", "number"
    description: str  # lower case, what `govedge gateway install` asks for when it is required
    required: bool = False
    default: Any = None  # what the backend uses when the key is not given
    flag: str | None = None  # the command-line flag that gives it (`govedge gateway install`, `govedge verify`)
    audit: bool = False  # an auditor gives it too (`govedge verify`), to look roots up
    example: Any = None  # the value gateway.toml's example shows (govedge.gateway.config)


class GatewaySide(Protocol):
    """What a backend is made from on the gateway (govedge.gateway.config.GatewayConfig)."""

    gateway_id: str
    anchor: dict  # the backend's [anchor.<name>] settings, checked, files made absolute

    def signing_key(self): ...


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    settings: tuple[Setting, ...]
    make: Callable[[GatewaySide], AnchorBackend]  # the gateway's backend
    audit: Callable[[Mapping[str, Any], Mapping | None], AnchorBackend]  # an auditor's: (settings, creator keys)
    doc: str  # the document that describes the chain and its settings

    @property
    def address(self) -> Setting:
        """The setting that says where the chain is: what `govedge verify` chooses the backend by."""
        return next(s for s in self.settings if s.type == "url")

    def setting(self, key: str) -> Setting:
        return next(s for s in self.settings if s.key == key)


_registry: dict[str, Backend] = {}


def register(name: str, *, description: str, settings: tuple[Setting, ...], make: Callable, audit: Callable,
             doc: str) -> Backend:
    """Registers a backend under ``name`` (a backend module calls this once, when it is imported)."""
    if name == NONE or name in _registry:
        raise ValueError(f"anchor backend {name!r} is registered already")
    backend = Backend(name, description, tuple(settings), make, audit, doc)
    _registry[name] = backend
    return backend


def _load_built_in() -> None:
    for name in BUILT_IN:
        if name not in _registry:
            importlib.import_module(f"{__name__}.{name}")


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, built-in ones first ("rest", "evm")."""
    _load_built_in()  # in BUILT_IN's order, whichever module was imported first
    return BUILT_IN + tuple(name for name in _registry if name not in BUILT_IN)


def lookup(name: str) -> Backend:
    """The backend registered as ``name``; a ConfigError naming the known ones if there is none."""
    _load_built_in()
    try:
        return _registry[name]
    except KeyError:
        raise ConfigError(f"[anchor] backend must be {_choices()}, not {name!r}") from None


def _choices() -> str:
    names = [repr(n) for n in backend_names()] + [repr(NONE)]
    return ", ".join(names[:-1]) + " or " + names[-1]


_TYPES = {"url": str, "string": str, "file": str, "integer": int, "number": float}


def section_of(name: str) -> schema.Section:
    """The backend's ``[anchor.<name>]`` section as the configuration schema (govedge.core.config) has it:
    its keys typed, file settings relative to gateway.toml's folder, required ones asked for only when
    the backend is the one chosen."""
    backend = lookup(name)
    keys = []
    for s in backend.settings:
        kind = _TYPES[s.type]
        default = s.default if isinstance(s.default, kind) and s.type != "file" else None
        if kind is float and isinstance(s.default, int):
            default = float(s.default)
        shown = None if default is not None or s.default is None else s.default
        keys.append(schema.Key(s.key, kind, default, s.description + (f" ({s.flag} of govedge gateway install)"
                                                                          if s.flag and s.required else ""),
                               required=s.required, path=s.type == "file", min=0 if kind is not str else None,
                               example=s.example, shown=shown))
    return schema.Section(f"anchor.{name}", tuple(keys), help=f"Used when backend = \"{name}\": "
                          f"{backend.description} ({backend.doc}).", required=False)


def backend_key(subject: str, unanchored: str) -> schema.Key:
    """The ``backend`` key of an ``[anchor]`` section: where ``subject`` ("epochs", "reports") are anchored."""
    names = backend_names()
    return schema.Key("backend", str, NONE, f"where {subject} are anchored: "
                      + ", ".join(f"\"{n}\" ({lookup(n).description}, {lookup(n).doc})" for n in names)
                      + f", or \"{NONE}\": {unanchored}", choices=(*names, NONE))


def sections(main: schema.Section) -> tuple[schema.Section, ...]:
    """An ``[anchor]`` section and one ``[anchor.<name>]`` section per registered backend, from its settings."""
    return (main, *(section_of(name) for name in backend_names()))


def chosen_settings(backend: str, sections_: tuple[schema.Section, ...], values: Mapping) -> dict:
    """The chosen backend's settings from parsed sections (``values``: section name -> its values); the
    chosen backend's section must be complete, the others only right."""
    if backend == NONE:
        return {}
    section = next(s for s in sections_ if s.name == f"anchor.{backend}")
    schema.required(section, values[section.name])
    return {k: str(x) if isinstance(x, Path) else x for k, x in values[section.name].items() if x is not None}


def settings_of(name: str, section: Mapping, base) -> dict:
    """The ``[anchor.<name>]`` section checked against the backend's settings: a ConfigError names
    unknown, missing and mistyped keys; file settings are made relative to ``base`` (gateway.toml's folder)."""
    sec = section_of(name)
    values = schema.parse({"anchor": {name: dict(section)}}, (sec,), Path(base))[sec.name]
    schema.required(sec, values)
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}
