"""The hub's status page (`govedge hub web`): what `govedge hub status` says — gateways and devices by when
they were last heard, backlogs, anchoring, problems — refreshing itself. Read-only: it reads the hub's store
in a process of its own (govedge.core.web)."""

from __future__ import annotations

from pathlib import Path

from govedge.core import web

from . import status
from .config import HubConfig

PAGE = Path(__file__).with_name("web")


def app(cfg: HubConfig, refresh_s: float = 5.0):
    return web.app("IoT-Hub ingest", PAGE, lambda: status.status(cfg), refresh_s)
