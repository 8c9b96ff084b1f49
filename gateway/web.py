"""The gateway's status page (`govedge gateway web`): what `govedge gateway status` says, for a technician's
phone or laptop at the cabinet, refreshing itself. Read-only: it reads gateway.db read-only and the running
service's live.json, in a process of its own (govedge.core.web)."""

from __future__ import annotations

from pathlib import Path

from govedge.core import web

from . import health
from .config import GatewayConfig

PAGE = Path(__file__).with_name("web")


def app(cfg: GatewayConfig, refresh_s: float = 5.0):
    return web.app(f"gateway {cfg.gateway_id}", PAGE, lambda: health.status(cfg), refresh_s)
