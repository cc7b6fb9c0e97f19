"""`hub serve`: the SuperLink on loopback, the Fleet-only TLS proxy, the study runner and the dashboard."""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn

from hub.cert_reload import CertificateReloader
from hub.fleet_proxy import make_app
from hub.home import HubHome
from hub.service import quiet_libraries, run_until_stopped
from hub.study_runner import StudyRunner
from hub.superlink import start_superlink
from protocols.procs import port_open, wait_for
from protocols.proctree import catch_stop_signals

log = logging.getLogger(__name__)


def serve(home: HubHome, *, insecure: bool = False, web_port: int | None = None) -> int:
    cfg = home.config()
    quiet_libraries()
    stop = catch_stop_signals("hub serve")  # from here on, a signal lets `finally` stop the SuperLink
    if insecure:
        log.warning("INSECURE: no TLS and no node authentication; anyone reaching the port can join")
    runner = StudyRunner(home)
    runner.acquire()  # before the SuperLink: a second `hub serve` of this home stops here
    superlink = start_superlink(home, insecure)
    background: list[uvicorn.Server] = []
    try:
        wait_for(lambda: port_open("127.0.0.1", cfg.internal_port), 60, "the SuperLink to listen", superlink)
        scheme = "http" if insecure else "https"
        app = make_app(f"{scheme}://127.0.0.1:{cfg.internal_port}", None if insecure else home.ca_cert)
        ssl_args: dict[str, Any] = (
            {} if insecure else {"ssl_certfile": str(home.server_cert), "ssl_keyfile": str(home.server_key)}
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=cfg.bind,
                port=cfg.public_port,
                log_level="warning",
                timeout_keep_alive=60,
                timeout_graceful_shutdown=3,
                **ssl_args,
            )
        )
        runner.start()
        background.append(_start_dashboard(home, cfg.web_host, cfg.web_port if web_port is None else web_port))
        if not insecure:  # `hub pki renew` takes effect on the public port without a restart
            CertificateReloader(lambda: getattr(server.config, "ssl", None), home.server_cert, home.server_key).start()
        log.info(
            "hub serving Fleet API on %s:%d for %s (SuperLink on 127.0.0.1:%d)",
            cfg.bind,
            cfg.public_port,
            cfg.public_host,
            cfg.internal_port,
        )
        print(f"hub: Fleet API on {'http' if insecure else 'https'}://{cfg.bind}:{cfg.public_port}", flush=True)
        return run_until_stopped(server, superlink, stop)
    finally:
        for web in background:
            web.should_exit = True
        runner.stop()
        superlink.stop()


def _start_dashboard(home: HubHome, host: str, port: int) -> uvicorn.Server:
    """The dashboard and JSON API on their own port, in a thread; a port in use is logged, not fatal."""
    from hub.web.app import web_server

    web = web_server(home, host, port)
    threading.Thread(target=web.run, name="dashboard", daemon=True).start()
    print(f"hub: dashboard on http://{host}:{port}/ (sign in with a `hub users add` link)", flush=True)
    return web
