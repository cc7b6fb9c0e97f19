"""The public port: a filtering proxy that passes only Fleet API calls to the loopback SuperLink."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

# Hop-by-hop headers are per connection; the node-auth headers (flwr-*) pass through unchanged.
HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
FLEET_PATH = re.compile(r"/v1/fleet/[a-z][a-z0-9-]*")
MAX_BODY = 64 * 1024 * 1024  # objects travel in <= 5 MiB chunks and bundles are <= 10 MB


def allowed(method: str, raw_path: str) -> bool:
    """Only `POST /v1/fleet/<endpoint>`: no Control, no Runtime, no traversal or case tricks."""
    return method == "POST" and FLEET_PATH.fullmatch(raw_path) is not None


def make_app(upstream: str, ca_file: Path | None) -> Starlette:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
    # Upstream timeout above the SuperNode's 30 s poll timeout.
    client = httpx.AsyncClient(base_url=upstream, verify=verify, timeout=httpx.Timeout(90.0))

    async def proxy(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        if not allowed(request.method, raw_path):
            return PlainTextResponse("forbidden: only the Fleet API is served here\n", status_code=403)
        length = int(request.headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return PlainTextResponse("request body too large\n", status_code=413)
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP]
        upstream_req = client.build_request("POST", raw_path, headers=headers, content=request.stream())
        reply = await client.send(upstream_req, stream=True)
        return StreamingResponse(
            reply.aiter_raw(),
            status_code=reply.status_code,
            headers={k: v for k, v in reply.headers.items() if k.lower() not in HOP},
            background=BackgroundTask(reply.aclose),
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", proxy, methods=methods)], lifespan=lifespan)
