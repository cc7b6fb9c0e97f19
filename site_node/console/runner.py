"""The console inside `site_node serve`: a uvicorn server on a thread, started when site.toml asks for it."""

from __future__ import annotations

import logging
import threading

from protocols.procs import port_open
from site_node.home import SiteConfig, SiteHome

log = logging.getLogger(__name__)


class ConsoleThread:
    """Runs beside the engine; a taken port or a failed start leaves the engine running (the console is optional)."""

    def __init__(self, home: SiteHome, port: int) -> None:
        from site_node.console.app import console_server, console_url

        self.url = console_url(home, port)
        self.server = console_server(home, port)
        self.thread = threading.Thread(target=self.server.run, name="site-console", daemon=True)

    @classmethod
    def start_for(cls, home: SiteHome, cfg: SiteConfig) -> ConsoleThread | None:
        if not cfg.console_with_serve:
            return None
        if port_open("127.0.0.1", cfg.console_port):
            log.warning(
                "console NOT started: port %d on 127.0.0.1 is taken; set [console] port in site.toml", cfg.console_port
            )
            return None
        console = cls(home, cfg.console_port)
        console.thread.start()
        log.info("site console on %s/ (sign in with a `site_node console login` link)", console.url)
        return console

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
