"""The dashboard's FastAPI app factory and its error pages; `run_web` serves it (127.0.0.1 by default)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from hub.accounts import AccessError, Accounts
from hub.home import HubHome
from hub.web import api, auth, pages
from protocols import __version__
from protocols.errors import ConfigError, SurgFedError

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def create_app(home: HubHome) -> FastAPI:
    app = FastAPI(
        title="surgfed hub",
        version=__version__,
        description="Coordinator API of the Surg-R1 federated validation hub.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; hospitals may be offline (the schema is served)
        redoc_url=None,
    )
    app.state.home = home
    app.state.accounts = Accounts(home.store())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(SurgFedError)
    async def known_error(request: Request, exc: SurgFedError) -> Response:
        status = 403 if isinstance(exc, AccessError) else 404 if _unknown(exc) else 400
        return _error(request, status, str(exc))

    return app


def _unknown(exc: SurgFedError) -> bool:
    return isinstance(exc, ConfigError) and str(exc).startswith("unknown ")


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    title = {401: "Sign in first", 403: "Not allowed", 404: "Not found"}.get(status, "Request refused")
    return pages.render(request, "message.html", status_code=status, user=None, title=title, message=message)


def web_server(home: HubHome, host: str, port: int) -> uvicorn.Server:
    """The dashboard as a uvicorn server; `hub serve` can run it in a thread beside the Fleet proxy."""
    config = uvicorn.Config(create_app(home), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    return uvicorn.Server(config)


def run_web(home: HubHome, host: str, port: int) -> int:
    server = web_server(home, host, port)
    print(f"hub: dashboard on http://{host}:{port}/ (sign in with a `hub users add` link)", flush=True)
    server.run()  # handles SIGINT/SIGTERM itself
    return 0 if server.started else 1
