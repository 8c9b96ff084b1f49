"""The hub's web service (`govedge hub web`): its status page — what `govedge hub status` says: gateways and
devices by when they were last heard, backlogs, anchoring, problems — refreshing itself; the OGC SensorThings
API over what it verified (``/v1.1``, govedge.hub.sta); and every reading's proof bundle (``/proofs/DEVICE/SEQ``,
as `govedge hub proof` makes it). Read-only: it reads the hub's store in a process of its own
(govedge.core.web); the API and the proofs may be read by pages of any origin (CORS)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from govedge.core import web
from govedge.core.errors import text_of

from . import proofs, sta, status
from .config import HubConfig

PAGE = Path(__file__).with_name("web")
log = logging.getLogger("govedge.web")
SEQ = re.compile(r"[0-9]{1,20}")


def app(cfg: HubConfig, refresh_s: float = 5.0):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    api = sta.Api(cfg.registry, cfg.store)
    cors = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "OPTIONS"],
                       allow_headers=["*"], max_age=86400)]
    read_only = JSONResponse({"code": 405, "type": "error", "message": "read-only: the hub's ingest is the only "
                              "writer of its store; GET, HEAD and OPTIONS are answered"}, status_code=405,
                             headers={"allow": "GET, HEAD, OPTIONS"})

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
            return JSONResponse({"code": 404, "type": "error", "message": f"no reading number {seq!r}"},
                                status_code=404)
        try:
            bundle = await asyncio.to_thread(proofs.bundle_for, cfg, device, int(seq))
        except proofs.ProofUnavailable as exc:
            return JSONResponse({"code": 404, "type": "error", "message": text_of(exc)}, status_code=404)
        except Exception as exc:  # noqa: BLE001 - the store or a file that cannot be read: said, not a traceback
            log.warning("web: the proof of %s #%s could not be made: %s: %s", device, seq, type(exc).__name__,
                        text_of(exc))
            return JSONResponse({"code": 503, "type": "error", "message": f"the proof cannot be made now: "
                                 f"{text_of(exc)}"}, status_code=503)
        return JSONResponse(bundle)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    api_app = Starlette(routes=[Route("/", answer, methods=methods), Route("/{path:path}", answer, methods=methods)],
                        middleware=cors)
    proofs_app = Starlette(routes=[Route("/{device}/{seq}", proof, methods=methods)], middleware=cors)
    return web.app("IoT-Hub ingest", PAGE, lambda: status.status(cfg), refresh_s,
                   routes=(Route(f"/{sta.VERSION}", answer, methods=methods), Mount(f"/{sta.VERSION}", app=api_app),
                           Mount("/proofs", app=proofs_app)))
