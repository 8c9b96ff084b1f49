"""The read-only web pages of the gateway and the hub: one Starlette application per service, served by
uvicorn in a process of its own, apart from the service whose state it shows (a page being looked at never
takes time from the gateway's main process, and a fault in it never touches the store: it reads it read-only).

A page is one HTML file (shared) with the service's script (``app.js``) and the shared style, no build step and nothing fetched from
elsewhere (a technician's phone at a street cabinet has no internet); it asks ``api/status`` for the same JSON
document the service's `status --json` command prints, and refreshes itself. The document is built anew for
every request, so the numbers are the store's at that moment.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from .errors import GovedgeError, text_of

log = logging.getLogger("govedge.web")

# nothing but the page's own files may run or load: a status text that quotes a hostile device id or topic
# stays text (the scripts set textContent, never innerHTML), and no other site may frame the page
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

SHARED = Path(__file__).with_name("web")  # the style and script every page shares


class WebError(GovedgeError, OSError):
    """The page cannot be served: its address is taken or not this machine's."""

    code = "web"


def app(title: str, folder: Path, status: Callable[[], dict], refresh_s: float = 5.0, routes: tuple = ()):
    """The Starlette application of one service's page: ``/`` the page (the shared index.html, whose
    ``app.js`` is the service's, from ``folder``), the shared files under ``/shared/``, and ``/api/status``
    the document ``status()`` builds (HTTP 500 with one line of JSON when it raises, so the page can say
    what went wrong). ``routes``: the service's own routes beside these (Starlette routes or mounts)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def page(request):
        return FileResponse(SHARED / "index.html", media_type="text/html; charset=utf-8")

    async def api_status(request):
        try:
            doc = await asyncio.to_thread(status)  # the store is read in a thread: the server stays responsive
        except Exception as exc:  # noqa: BLE001 - the page says what went wrong instead of going blank
            log.warning("web: the status could not be read: %s: %s", type(exc).__name__, text_of(exc))
            return JSONResponse({"error": f"{type(exc).__name__}: {text_of(exc)}"}, status_code=500)
        return JSONResponse(doc)

    async def config(request):
        return Response(json.dumps({"title": title, "refresh_s": refresh_s}), media_type="application/json")

    async def headers(request, call_next):
        response = await call_next(request)
        for name, value in HEADERS.items():  # a route may set its own (a page that needs more than these)
            response.headers.setdefault(name, value)
        return response

    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    return Starlette(routes=[
        Route("/", page), Route("/api/status", api_status), Route("/api/page", config), *routes,
        Mount("/shared", StaticFiles(directory=SHARED)), Mount("/", StaticFiles(directory=folder)),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made before the server starts, so that a taken port or a foreign address is one
    line naming it (uvicorn alone logs it and exits 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except socket.gaierror as exc:
        sock.close()
        raise WebError(f"{host} is not an address: {text_of(exc)}") from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise WebError(f"port {port} on {host} is in use by another program: stop it or give another "
                           "port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise WebError(f"{host} is not an address of this machine: give one of its own, or 0.0.0.0 for "
                           "all") from None
        raise WebError(f"cannot listen on {host}:{port}: {text_of(exc)}") from None
    return sock


def serve(application, sock: socket.socket) -> None:
    """Serve until SIGTERM or Ctrl-C (uvicorn handles both and ends cleanly)."""
    import uvicorn

    config = uvicorn.Config(application, log_config=None, access_log=False, lifespan="off",
                            server_header=False, date_header=False)
    uvicorn.Server(config).run(sockets=[sock])
