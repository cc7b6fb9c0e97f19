"""The console's FastAPI app factory and error pages; `console_server` serves it on 127.0.0.1 only."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from protocols import __version__
from protocols.errors import SurgFedError
from site_node.console import auth, pages
from site_node.console.accounts import AccessError
from site_node.home import SiteHome

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
HOST = "127.0.0.1"  # the console never listens beyond this machine; a reverse proxy may publish it


def create_app(home: SiteHome) -> FastAPI:
    app = FastAPI(title="surgfed site console", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.home = home.require()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(auth.router)
    app.include_router(pages.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(SurgFedError)
    async def known_error(request: Request, exc: SurgFedError) -> Response:
        return _error(request, 403 if isinstance(exc, AccessError) else 400, str(exc))

    return app


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": message}, status_code=status)
    title = {401: "Sign in first", 403: "Not allowed", 404: "Not found"}.get(status, "Refused")
    return pages.render(request, "message.html", status_code=status, operator=None, title=title, message=message)


def console_url(home: SiteHome, port: int) -> str:
    public = home.config().console_public_url
    return public or f"http://{HOST}:{port}"


def console_server(home: SiteHome, port: int) -> uvicorn.Server:
    """The console as a uvicorn server; `site_node serve` runs it in a thread beside the engine."""
    config = uvicorn.Config(create_app(home), host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=3)
    return uvicorn.Server(config)
