"""Framing of the local socket between the ClientApp and the site engine: length-prefixed JSON.

A request is two frames: a small header (`{"token", "op"}`, at most MAX_HEADER bytes) that the engine
authenticates before it reads anything else and answers with a go-ahead (`{"ok": true}`) or a refusal,
then the body (`{"records"}`), size-limited per op, answered by the reply.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

from protocols.errors import EngineError

MAX_FRAME = 512 * 1024 * 1024  # an 80 MB bf16 adapter, base64-encoded, fits with room to spare
MAX_HEADER = 4096  # the token and the op: nothing larger is read before the token is checked
MAX_SMALL_BODY = 1024 * 1024  # every body but a SUBMIT's (which may carry the global adapter)
_HEADER = struct.Struct(">Q")
UNIX_PREFIX = "unix:"


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        if deadline is not None and time.monotonic() > deadline:
            raise EngineError(f"engine connection too slow: {len(chunks)} of {n} bytes before the deadline")
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise EngineError(f"engine connection closed after {len(chunks)} of {n} bytes")
        chunks.extend(chunk)
    return bytes(chunks)


def frame_length(prefix: bytes, limit: int) -> int:
    """The length a frame announces; refused before any of its bytes are read when above `limit`."""
    (length,) = _HEADER.unpack(prefix)
    if length > limit:
        raise EngineError(f"engine frame of {length} bytes exceeds the {limit}-byte limit")
    return int(length)


def decode_frame(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise EngineError(f"engine frame is not valid JSON: {str(exc)[:200]}") from exc


def recv_frame(sock: socket.socket, limit: int = MAX_FRAME, seconds: float | None = None) -> Any:
    deadline = None if seconds is None else time.monotonic() + seconds
    length = frame_length(_recv_exact(sock, _HEADER.size, deadline), limit)
    return decode_frame(_recv_exact(sock, length, deadline))


def _connect(address: str, timeout: float) -> socket.socket:
    if address.startswith(UNIX_PREFIX):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address[len(UNIX_PREFIX) :])
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise EngineError(f"engine address must be on loopback or a unix: socket, got {address!r}")
    return socket.create_connection((host, int(port)), timeout=timeout)


def call_engine(address: str, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One request/reply to the engine at HOST:PORT (loopback only) or unix:PATH."""
    header = {"token": request.get("token", ""), "op": request.get("op")}
    try:
        with _connect(address, timeout) as sock:
            send_frame(sock, header)
            go_ahead = recv_frame(sock, MAX_HEADER)
            if not isinstance(go_ahead, dict) or not go_ahead.get("ok"):
                return go_ahead if isinstance(go_ahead, dict) else {"ok": False, "error": "engine refused"}
            send_frame(sock, {"records": request.get("records") or {}})
            reply = recv_frame(sock)
    except OSError as exc:
        raise EngineError(f"cannot reach the site engine at {address}: {exc}") from exc
    if not isinstance(reply, dict):
        raise EngineError(f"engine reply must be an object, got {type(reply).__name__}")
    return reply
