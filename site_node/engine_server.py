"""The engine's local socket: a Unix socket in the site home (0600) or 127.0.0.1; authenticate, then read.

One acceptor thread holds every connection until its small header frame has arrived (idle connections
cost a file descriptor, never a thread, and are closed after HEADER_SECONDS or when too many wait); the
token is checked before any body byte is read; authenticated requests go to a bounded worker pool.
"""

from __future__ import annotations

import hmac
import logging
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from protocols.contract import Op
from protocols.errors import EngineError
from protocols.wire import MAX_FRAME, MAX_HEADER, MAX_SMALL_BODY, decode_frame, frame_length, recv_frame, send_frame
from site_node.engine import SiteEngine

log = logging.getLogger(__name__)
HEADER_SECONDS = 5.0  # to send the first frame
BODY_SECONDS = 120.0  # to send the body (a SUBMIT may carry ~110 MB of adapter)
MAX_WAITING = 256  # connections that have not sent their header yet; the oldest goes first beyond this
WORKERS = 4
UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass
class _Pending:
    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class EngineServer:
    """Serves `engine.handle` on `unix_path` (preferred) or 127.0.0.1:`port`."""

    def __init__(self, engine: SiteEngine, token: str, *, port: int = 0, unix_path: Path | None = None) -> None:
        self.engine, self._token = engine, token
        if unix_path is not None:
            unix_path = Path(unix_path)
            unix_path.unlink(missing_ok=True)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # created 0600: no window in which another account may connect
            try:
                self._sock.bind(str(unix_path))
            finally:
                os.umask(old)
            unix_path.chmod(0o600)
            self.address = f"unix:{unix_path}"
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(("127.0.0.1", port))
            self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._unix_path = unix_path
        self._sock.listen(128)
        self._sock.setblocking(False)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="engine-request")
        self._stop = threading.Event()
        self._waiting: dict[socket.socket, _Pending] = {}
        self._thread = threading.Thread(target=self._loop, name="engine-server", daemon=True)

    @staticmethod
    def unix_path_fits(path: Path) -> bool:
        return len(os.fsencode(str(path))) <= UNIX_PATH_MAX

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for pending in list(self._waiting.values()):
            pending.sock.close()
        self._sock.close()
        if self._unix_path is not None:
            self._unix_path.unlink(missing_ok=True)

    # -- the acceptor: headers only --------------------------------------------------------------
    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    if key.fileobj is self._sock:
                        self._accept(sel)
                    else:
                        self._read_header(sel, self._waiting[cast(socket.socket, key.fileobj)])
                now = time.monotonic()
                for pending in [p for p in self._waiting.values() if p.deadline < now]:
                    self._drop(sel, pending)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        if len(self._waiting) >= MAX_WAITING:  # make room: the oldest idle connection goes
            self._drop(sel, min(self._waiting.values(), key=lambda p: p.deadline))
        self._waiting[conn] = _Pending(conn, time.monotonic() + HEADER_SECONDS)
        sel.register(conn, selectors.EVENT_READ)

    def _drop(self, sel: selectors.BaseSelector, pending: _Pending) -> None:
        sel.unregister(pending.sock)
        del self._waiting[pending.sock]
        pending.sock.close()

    def _read_header(self, sel: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(8 + MAX_HEADER - len(pending.data))
            if not chunk:
                raise EngineError("closed before its header")
            pending.data.extend(chunk)
            if len(pending.data) < 8:
                return
            length = frame_length(bytes(pending.data[:8]), MAX_HEADER)
            if len(pending.data) < 8 + length:
                return
            header = decode_frame(bytes(pending.data[8 : 8 + length]))
        except (BlockingIOError, InterruptedError):
            return
        except (EngineError, OSError) as exc:
            log.warning("engine connection dropped: %s", exc)
            self._drop(sel, pending)
            return
        sel.unregister(pending.sock)
        del self._waiting[pending.sock]
        self._dispatch(pending.sock, header)

    def _dispatch(self, conn: socket.socket, header: object) -> None:
        token = str(header.get("token", "")) if isinstance(header, dict) else ""
        op = header.get("op") if isinstance(header, dict) else None
        conn.setblocking(True)
        conn.settimeout(HEADER_SECONDS)
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            # The engine logs the refusal; the body, whatever its size, is never read.
            refusal = self.engine.handle({"token": token[:128], "op": str(op)[:32]})
            self._send_and_close(conn, refusal)
            return
        self._pool.submit(self._serve, conn, op)

    # -- the workers: authenticated requests -------------------------------------------------------
    def _serve(self, conn: socket.socket, op: object) -> None:
        try:
            send_frame(conn, {"ok": True})
            conn.settimeout(BODY_SECONDS)
            limit = MAX_FRAME if op == Op.SUBMIT.value else MAX_SMALL_BODY
            body = recv_frame(conn, limit, seconds=BODY_SECONDS)
            records = body.get("records") if isinstance(body, dict) else None
            reply = self.engine.handle({"token": self._token, "op": op, "records": records or {}})
            self._send_and_close(conn, reply)
        except (EngineError, OSError) as exc:
            log.warning("engine connection dropped: %s", exc)
            conn.close()

    @staticmethod
    def _send_and_close(conn: socket.socket, reply: dict) -> None:
        try:
            send_frame(conn, reply)
        except OSError as exc:
            log.warning("engine reply not delivered: %s", exc)
        finally:
            conn.close()
