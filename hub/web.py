"""The hub's web service (`govedge hub web`): its status page — what `govedge hub status` says: gateways and
devices by when they were last heard, backlogs, anchoring, problems — refreshing itself; the OGC SensorThings
API over what it verified (``/v1.1``, govedge.hub.sta); every reading's proof bundle (``/proofs/DEVICE/SEQ``,
as `govedge hub proof` makes it); and the data dashboard (``/dashboard``): the stations on a plan, their
quantities plotted from the SensorThings API, a calendar of the days over the EU limit values
(``/api/daily``, govedge.hub.report's daily means) and each plotted value's proof checked link by link
(``/api/verify/DEVICE/SEQ``, the offline checks of `govedge verify`). Read-only: it reads the hub's store in a
process of its own (govedge.core.web); the API and the proofs may be read by pages of any origin (CORS)."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

from govedge.core import cose, web, wire
from govedge.core.proof import check as check_bundle, outcome as verdicts
from govedge.core.errors import text_of
from govedge.core.registry import Registry

from . import proofs, sta, status
from .config import HubConfig

PAGE = Path(__file__).with_name("web")
log = logging.getLogger("govedge.web")
SEQ = re.compile(r"[0-9]{1,20}")
YEAR = re.compile(r"[0-9]{4}")
# the dashboard's plots are plotly.js, which sets the style of the elements it draws from its script and adds
# its own <style> element: its page alone allows inline styles; scripts stay the page's own files only
DASHBOARD_CSP = web.HEADERS["content-security-policy"].replace(
    "default-src 'self';", "default-src 'self'; style-src 'self' 'unsafe-inline';")


def plotly_js() -> Path | None:
    """plotly.js as the PyPI package `plotly` ships it (the hub extra installs it); None when it is missing."""
    try:
        found = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        return None
    return Path(str(found)) if found.is_file() else None


def _iso(t) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def verification(cfg: HubConfig, device_id: str, seq: int) -> dict:
    """The reading's proof bundle checked as `govedge verify BUNDLE --registry R` checks it, offline (no chain
    asked): each link's verdict in order (govedge.core.proof.check and outcome), and what each link is made of, decoded
    for a reader: the signed message and its signature with the device's key id, the Merkle path to the batch
    root, the gateway's batch head, the path to the epoch root, the anchor receipt. Raises
    proofs.ProofUnavailable when the reading has no proof (yet)."""
    bundle = proofs.bundle_for(cfg, device_id, seq)
    registry = Registry.load(cfg.registry)
    lines, failed, code = check_bundle(bundle, registry)
    told = verdicts(lines, failed, code, chain_asked=False)
    message = bytes.fromhex(bundle["reading"]["message"])
    reading = wire.decode_unverified(message)
    key = None
    try:
        verified = wire.verify(message, registry)
        device = registry.devices[reading.device_id]
        k = device.ordered_keys()[verified.key]
        key = {"id": k.key_id, "status": k.status}
    except (wire.WireError, KeyError, IndexError):
        pass  # the device_signature link says why
    head = cose.strict_loads(bytes.fromhex(bundle["batch"]["head"]), "the batch head")
    parts = {
        "reading": {"message": bundle["reading"]["message"], "bytes": len(message), "device": reading.device_id,
                    "seq": reading.seq, "time": _iso(reading.time), "signature": reading.signature.hex(),
                    "algorithm": "ES256", "key": key},
        "batch": {"id": bundle["batch"].get("id"), "leaf_index": bundle["batch"]["leaf_index"],
                  "path": bundle["batch"]["path"],
                  "head": {name: (value.hex() if isinstance(value, bytes) else _iso(value) if name == "created"
                                  else value) for name, value in head.items()}},
        "epoch": dict(bundle["epoch"]),
        "anchor": bundle.get("anchor"),
    }
    return {"device": device_id, "seq": seq, "result": told["result"], "meaning": told["meaning"],
            "links": told["links"], "parts": parts}


def daily_means(cfg: HubConfig, station: str, year: int, interval_s: int) -> dict:
    """A station's daily means of particulate matter over a calendar year and its days over the EU daily limit
    values, as `govedge hub report` computes them (govedge.hub.report, by govedge.core.report's method: hourly
    means valid with 75 % of the hour's slots, daily means from at least 18 valid hours). Raises LookupError for
    a station the registry does not know."""
    from govedge.core import report as method

    from . import report
    from .store import HubStore

    if station not in Registry.load(cfg.registry).devices:
        raise LookupError(f"station {station!r} is not a device of the registry (give a device id, e.g. esp32-0007)")
    period = method.year_period(year)
    daily = {name: q.unit for name, q in method.QUANTITIES.items() if q.daily}
    store = HubStore(cfg.store)
    try:
        body = report.figures_of(store, station, period, interval_s, daily).body()
    finally:
        store.close()
    quantities = {name: {"unit": body[name]["unit"], "assessment": body[name].get("assessment", []),
                         "days": [{"date": method.day_text(day), "mean": mean, "valid_hours": hours}
                                  for day, mean, hours in body[name].get("days", [])]} for name in daily}
    return {"station": station, "year": year, "interval_s": interval_s, "method": method.METHOD,
            "valid_hour": str(method.VALID_HOUR), "valid_day_hours": method.VALID_DAY_HOURS,
            "limits": [limit.to_body() for limit in method.LIMITS if limit.averaging == "day"],
            "quantities": quantities}


def app(cfg: HubConfig, refresh_s: float = 5.0):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route

    api = sta.Api(cfg.registry, cfg.store)
    cors = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "OPTIONS"],
                       allow_headers=["*"], max_age=86400)]

    def error(code: int, message: str, headers: dict | None = None):
        """The API's error document (as govedge.hub.sta answers its own): code, type, message."""
        return JSONResponse({"code": code, "type": "error", "message": message}, status_code=code, headers=headers)

    read_only = error(405, "read-only: the hub's ingest is the only writer of its store; GET, HEAD and OPTIONS "
                           "are answered", {"allow": "GET, HEAD, OPTIONS"})

    async def answer(request):
        if request.method not in ("GET", "HEAD"):
            return read_only
        base = f"{request.url.scheme}://{request.url.netloc}/{sta.VERSION}"
        options = {k: v for k, v in request.query_params.multi_items()[::-1]}  # the first of a repeated option
        code, body, media = await asyncio.to_thread(api.get, request.path_params.get("path", ""), options, base)
        return Response(body, status_code=code, media_type=media)

    async def proof(request):
        if request.method not in ("GET", "HEAD"):
            return read_only
        device, seq = request.path_params["device"], request.path_params["seq"]
        if not SEQ.fullmatch(seq):
            return error(404, f"no reading number {seq!r}")
        try:
            bundle = await asyncio.to_thread(proofs.bundle_for, cfg, device, int(seq))
        except proofs.ProofUnavailable as exc:
            return error(404, text_of(exc))
        except Exception as exc:  # noqa: BLE001 - the store or a file that cannot be read: said, not a traceback
            log.warning("web: the proof of %s #%s could not be made: %s: %s", device, seq, type(exc).__name__,
                        text_of(exc))
            return error(503, f"the proof cannot be made now: {text_of(exc)}")
        return JSONResponse(bundle)

    async def dashboard(request):
        return FileResponse(PAGE / "dashboard.html", media_type="text/html; charset=utf-8",
                            headers={"content-security-policy": DASHBOARD_CSP})

    async def vendor_plotly(request):
        found = plotly_js()
        if found is None:
            return Response("// plotly.js is missing: pip install 'govchain-edge[hub]' installs it\n",
                            status_code=404, media_type="text/javascript")
        return FileResponse(found, media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    async def verify(request):
        device, seq = request.path_params["device"], request.path_params["seq"]
        if not SEQ.fullmatch(seq):
            return error(404, f"no reading number {seq!r}")
        try:
            doc = await asyncio.to_thread(verification, cfg, device, int(seq))
        except proofs.ProofUnavailable as exc:
            return error(404, text_of(exc))
        except Exception as exc:  # noqa: BLE001 - the store or a file that cannot be read: said, not a traceback
            log.warning("web: the proof of %s #%s could not be checked: %s: %s", device, seq, type(exc).__name__,
                        text_of(exc))
            return error(503, f"the proof cannot be checked now: {text_of(exc)}")
        base = f"{request.url.scheme}://{request.url.netloc}"
        doc["bundle"] = f"{base}/proofs/{device}/{seq}"
        return JSONResponse(doc)

    async def daily(request):
        station = request.query_params.get("station", "")
        year, interval = request.query_params.get("year", ""), request.query_params.get("interval", "60")
        if not station:
            return error(400, "station: give a device id, e.g. station=esp32-0007")
        if not YEAR.fullmatch(year) or not 1970 <= int(year) <= 9999:
            return error(400, f"year: give a calendar year like 2026, not {year!r}")
        if not SEQ.fullmatch(interval) or not 1 <= int(interval) <= 3600 or 3600 % int(interval):
            return error(400, f"interval: the station's reading interval in seconds divides an hour "
                              f"(1, 2, 5, ... 60, ... 3600), not {interval!r}")
        try:
            doc = await asyncio.to_thread(daily_means, cfg, station, int(year), int(interval))
        except LookupError as exc:
            return error(404, str(exc))
        except Exception as exc:  # noqa: BLE001 - the store cannot be read: said, not a traceback
            log.warning("web: the daily means of %s could not be read: %s: %s", station, type(exc).__name__,
                        text_of(exc))
            return error(503, f"the daily means cannot be read now: {text_of(exc)}")
        return Response(json.dumps(doc, default=str), media_type="application/json")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    api_app = Starlette(routes=[Route("/", answer, methods=methods), Route("/{path:path}", answer, methods=methods)],
                        middleware=cors)
    proofs_app = Starlette(routes=[Route("/{device}/{seq}", proof, methods=methods)], middleware=cors)
    return web.app("IoT-Hub ingest", PAGE, lambda: status.status(cfg), refresh_s,
                   routes=(Route(f"/{sta.VERSION}", answer, methods=methods), Mount(f"/{sta.VERSION}", app=api_app),
                           Mount("/proofs", app=proofs_app), Route("/dashboard", dashboard),
                           Route("/vendor/plotly.min.js", vendor_plotly), Route("/api/daily", daily),
                           Route("/api/verify/{device}/{seq}", verify)))
