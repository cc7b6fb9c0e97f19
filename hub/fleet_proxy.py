"""The public port: a filtering proxy that passes only Fleet API calls to the loopback SuperLink."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProxyLimits:
    """What one client may cost the hub: body bytes (counted as they stream), parallel requests, seconds."""

    max_body: int = MAX_BODY
    max_concurrent: int = 64
    # Above the SuperNode's 30 s poll timeout; covers the upload and the wait for the upstream's headers.
    request_seconds: float = 120.0


class BodyTooLarge(Exception):
    """Raised inside the upload stream once more than the limit was sent (never forwarded upstream)."""


def allowed(method: str, raw_path: str) -> bool:
    """Only `POST /v1/fleet/<endpoint>`: no Control, no Runtime, no traversal or case tricks."""
    return method == "POST" and FLEET_PATH.fullmatch(raw_path) is not None


class _CountedBody:
    """The request body as it arrives, stopped before the chunk that would pass the limit (chunked or not)."""

    def __init__(self, request: Request, limit: int) -> None:
        self.request, self.limit, self.seen, self.exceeded = request, limit, 0, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.request.stream():
            self.seen += len(chunk)
            if self.seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge(f"request body passed {self.limit} bytes")
            yield chunk


def _too_large() -> Response:
    return PlainTextResponse("request body too large\n", status_code=413, headers={"connection": "close"})


def make_app(upstream: str, ca_file: Path | None, limits: ProxyLimits | None = None) -> Starlette:
    lim = limits or ProxyLimits()
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
    client = httpx.AsyncClient(base_url=upstream, verify=verify, timeout=httpx.Timeout(90.0))
    slots = asyncio.Semaphore(lim.max_concurrent)

    async def forward(request: Request, raw_path: str) -> Response:
        length = request.headers.get("content-length", "0") or "0"
        if not length.isdigit() or int(length) > lim.max_body:
            return _too_large()
        body = _CountedBody(request, lim.max_body)
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP]
        upstream_req = client.build_request("POST", raw_path, headers=headers, content=body.__aiter__())
        try:
            async with asyncio.timeout(lim.request_seconds):
                reply = await client.send(upstream_req, stream=True)
        except TimeoutError:
            return PlainTextResponse("request took too long\n", status_code=408, headers={"connection": "close"})
        except (BodyTooLarge, httpx.HTTPError):
            if body.exceeded:
                return _too_large()
            return PlainTextResponse("upstream unavailable\n", status_code=502)
        return StreamingResponse(
            reply.aiter_raw(),
            status_code=reply.status_code,
            headers={k: v for k, v in reply.headers.items() if k.lower() not in HOP},
            background=BackgroundTask(reply.aclose),
        )

    async def proxy(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        if not allowed(request.method, raw_path):
            return PlainTextResponse("forbidden: only the Fleet API is served here\n", status_code=403)
        if slots.locked():  # refuse at once rather than queue: a queue is memory an attacker fills
            return PlainTextResponse("too many requests\n", status_code=503, headers={"retry-after": "5"})
        async with slots:
            return await forward(request, raw_path)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", proxy, methods=methods)], lifespan=lifespan)
