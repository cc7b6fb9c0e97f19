"""How `hub serve` runs and stops: the proxy on a thread, the main thread waiting for a stop signal or a death."""

from __future__ import annotations

import logging
import threading

import uvicorn

from protocols.procs import Child

log = logging.getLogger(__name__)

# Their per-request INFO lines (httpx logs every proxied pull-messages call) drown the study's own events.
CHATTY_LOGGERS = ("httpx", "httpcore", "flwr", "uvicorn", "uvicorn.access", "uvicorn.error")


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep the HTTP client's, the web server's and Flower's loggers at `level` (the hub's own stay at INFO)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def run_until_stopped(server: uvicorn.Server, superlink: Child, stop: threading.Event) -> int:
    """Serve until `stop` is set (0: a stop signal, see `catch_stop_signals`) or the SuperLink or proxy dies (1).

    uvicorn on the main thread would take SIGTERM itself and, after its shutdown, raise it again with the default
    handler: the process then dies before its `finally` stops the SuperLink. On a thread it leaves signals alone.
    """
    thread = threading.Thread(target=server.run, name="fleet-proxy", daemon=True)
    thread.start()
    code = 0
    while not stop.wait(0.5):
        if not superlink.alive():
            log.error("the SuperLink exited:\n%s", superlink.tail())
            code = 1
            break
        if not thread.is_alive():
            log.error("the Fleet proxy stopped (see the lines above)")
            code = 1
            break
    server.should_exit = True
    thread.join(timeout=10)
    return code
