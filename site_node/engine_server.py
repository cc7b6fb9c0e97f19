"""The engine's local socket: 127.0.0.1 only, one length-prefixed JSON request and reply per connection."""

from __future__ import annotations

import logging
import socketserver
import threading

from protocols.errors import EngineError
from protocols.wire import recv_frame, send_frame
from site_node.engine import SiteEngine

log = logging.getLogger(__name__)


class _Handler(socketserver.BaseRequestHandler):
    server: EngineServer

    def handle(self) -> None:
        try:
            request = recv_frame(self.request)
            reply = self.server.engine.handle(request if isinstance(request, dict) else {})
            send_frame(self.request, reply)
        except (EngineError, OSError) as exc:
            log.warning("engine connection dropped: %s", exc)


class EngineServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, engine: SiteEngine, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.engine = engine
        self._thread = threading.Thread(target=self.serve_forever, name="engine-server", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
