"""`hub serve`: the SuperLink on loopback and the Fleet-only TLS proxy on the public port."""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn

from hub.cert_reload import CertificateReloader
from hub.fleet_proxy import make_app
from hub.home import HubHome
from hub.superlink import start_superlink
from protocols.procs import Child, port_open, wait_for

log = logging.getLogger(__name__)


def serve(home: HubHome, *, insecure: bool = False) -> int:
    cfg = home.config()
    if insecure:
        log.warning("INSECURE: no TLS and no node authentication; anyone reaching the port can join")
    superlink = start_superlink(home, insecure)
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
                host=cfg.public_host,
                port=cfg.public_port,
                log_level="warning",
                timeout_keep_alive=60,
                timeout_graceful_shutdown=3,
                **ssl_args,
            )
        )
        watcher = threading.Thread(target=_watch, args=(superlink, server), daemon=True)
        watcher.start()
        if not insecure:  # `hub pki renew` takes effect on the public port without a restart
            CertificateReloader(lambda: getattr(server.config, "ssl", None), home.server_cert, home.server_key).start()
        log.info(
            "hub serving Fleet API on %s:%d (SuperLink on 127.0.0.1:%d)",
            cfg.public_host,
            cfg.public_port,
            cfg.internal_port,
        )
        print(f"hub: Fleet API on {'http' if insecure else 'https'}://{cfg.public_host}:{cfg.public_port}", flush=True)
        server.run()  # handles SIGINT/SIGTERM itself
        return 0 if superlink.alive() else 1
    finally:
        superlink.stop()


def _watch(superlink: Child, server: uvicorn.Server) -> None:
    """If the SuperLink dies, stop serving: a proxy to nothing would only hide the failure."""
    while not server.should_exit:
        if not superlink.alive():
            log.error("the SuperLink exited:\n%s", superlink.tail())
            server.should_exit = True
            return
        threading.Event().wait(1.0)
