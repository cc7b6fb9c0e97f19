"""Framing of the local socket between the ClientApp and the site engine: length-prefixed JSON."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from protocols.errors import EngineError

MAX_FRAME = 512 * 1024 * 1024  # an 80 MB bf16 adapter, base64-encoded, fits with room to spare
_HEADER = struct.Struct(">Q")


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise EngineError(f"engine connection closed after {len(chunks)} of {n} bytes")
        chunks.extend(chunk)
    return bytes(chunks)


def recv_frame(sock: socket.socket) -> Any:
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if length > MAX_FRAME:
        raise EngineError(f"engine frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        return json.loads(_recv_exact(sock, length))
    except ValueError as exc:
        raise EngineError(f"engine sent invalid JSON: {exc}") from exc


def call_engine(address: str, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One request/reply to the engine at HOST:PORT (loopback only)."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise EngineError(f"engine address must be on loopback, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            send_frame(sock, request)
            reply = recv_frame(sock)
    except OSError as exc:
        raise EngineError(f"cannot reach the site engine at {address}: {exc}") from exc
    if not isinstance(reply, dict):
        raise EngineError(f"engine reply must be an object, got {type(reply).__name__}")
    return reply
