"""The Fleet-only filter: a case table of paths and methods that must be refused or passed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from hub.fleet_proxy import ProxyLimits, allowed, make_app
from protocols.procs import free_port, port_open, wait_for


@pytest.mark.parametrize(
    ("method", "path", "ok"),
    [
        ("POST", "/v1/fleet/pull-messages", True),
        ("POST", "/v1/fleet/register-node", True),
        ("GET", "/v1/fleet/pull-messages", False),
        ("POST", "/v1/control/list-runs", False),
        ("POST", "/v1/control/start-run", False),
        ("POST", "/v1/runtime/pull-messages", False),
        ("POST", "/v1/fleet/../control/list-runs", False),
        ("POST", "/v1/fleet/%2e%2e/control/list-runs", False),
        ("POST", "//v1/control/list-runs", False),
        ("POST", "/V1/fleet/pull-messages", False),
        ("POST", "/v1/fleetx/pull-messages", False),
        ("POST", "/v1/fleet/", False),
        ("POST", "/v1/fleet/a/b", False),
        ("POST", "/", False),
    ],
)
def test_only_fleet_posts_pass(method: str, path: str, ok: bool) -> None:
    assert allowed(method, path) is ok


# -- the body limit against a real proxy under uvicorn in front of a real upstream --------------------------
LIMIT = 1024 * 1024


class _Upstream:
    """A small real HTTP server that counts the body bytes it receives per request, and notes each body's first byte."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first_bytes: set[bytes] = set()

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        total, more = 0, True
        while more:
            message = await receive()
            body = message.get("body", b"")
            if total == 0 and body:
                self.first_bytes.add(body[:1])
            total += len(body)
            more = message.get("more_body", False) and message["type"] == "http.request"
        self.received.append(total)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"got {total}".encode()})


def _serve(app, port: int):  # type: ignore[no-untyped-def]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: port_open("127.0.0.1", port), 20, f"server on {port}")
    return server, thread


@pytest.fixture
def proxy_and_upstream():  # type: ignore[no-untyped-def]
    upstream = _Upstream()
    up_port, proxy_port = free_port(), free_port()
    limits = ProxyLimits(max_body=LIMIT, max_concurrent=4, request_seconds=5.0)
    servers = [_serve(upstream, up_port), _serve(make_app(f"http://127.0.0.1:{up_port}", None, limits), proxy_port)]
    yield upstream, f"http://127.0.0.1:{proxy_port}"
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_chunked_upload_over_the_limit_is_cut_at_the_limit(proxy_and_upstream) -> None:  # type: ignore[no-untyped-def]
    upstream, base = proxy_and_upstream
    with httpx.Client(base_url=base, timeout=30) as client:
        # The attack: no Content-Length, 8x the limit in chunks.
        try:
            r = client.post("/v1/fleet/push-object", content=_chunks(8 * LIMIT))
            status = r.status_code
        except httpx.HTTPError:  # the proxy may close while the client still sends: also a refusal
            status = 413
        assert status == 413
        assert all(n <= LIMIT for n in upstream.received), upstream.received
        # A declared oversize body is refused before any byte goes upstream. (The upstream may still be closing
        # the cut stream above, so count by content, not by request.)
        r = client.post("/v1/fleet/push-object", content=b"y" * (LIMIT + 1))
        assert r.status_code == 413 and b"y" not in upstream.first_bytes
        # Still serving, and a body at the limit passes whole (chunked too).
        r = client.post("/v1/fleet/push-object", content=_chunks(LIMIT))
        assert r.status_code == 200 and r.text == f"got {LIMIT}"
        assert client.post("/v1/control/list-runs", content=b"{}").status_code == 403


def test_slow_upload_is_cut_by_the_request_time_limit(proxy_and_upstream) -> None:  # type: ignore[no-untyped-def]
    upstream, base = proxy_and_upstream

    def slow() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(0.5)
            yield b"z" * 10

    with httpx.Client(base_url=base, timeout=30) as client:
        started = time.time()
        try:
            status = client.post("/v1/fleet/push-object", content=slow()).status_code
        except httpx.HTTPError:
            status = 408
        assert status == 408 and time.time() - started < 10.5
        assert client.post("/v1/fleet/pull-messages", content=b"{}").status_code == 200
