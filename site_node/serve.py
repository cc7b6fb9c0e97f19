"""`site_node serve`: the long-lived site engine plus a Flower SuperNode that only dials out."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from protocols.errors import ConfigError
from protocols.procs import Child, free_port
from protocols.proctree import catch_stop_signals
from site_node import sandbox
from site_node.audit_events import on_start
from site_node.confinement import supernode_command
from site_node.console import heartbeat
from site_node.console.runner import ConsoleThread
from site_node.engine import SiteEngine
from site_node.engine_server import EngineServer
from site_node.home import SiteConfig, SiteHome, owner_only, proxy_shown
from site_node.serve_events import SupernodeWatch

log = logging.getLogger(__name__)


def prepare_clientapp_dir(home: SiteHome) -> tuple[Path, Path]:
    """Copy what the SuperNode needs (engine token, node key) into the one site-home folder it may read."""
    d = home.clientapp_dir
    for sub in (d, d / "flwr", d / "tmp"):
        sub.mkdir(mode=0o700, exist_ok=True)
    token, key = d / "engine.token", d / "node.key"
    for src, dst in ((home.token_file, token), (home.node_key, key)):
        dst.unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o400)
    return token, key


def pin_app_bundles(home: SiteHome) -> None:
    """Install the approved ClientApp bundles and remove any other before the SuperNode starts."""
    from site_node.app_bundles import approved_apps, sync

    for note in sync(home):
        log.warning("apps: %s", note)
    apps = approved_apps(home)
    for app in apps:
        log.info("approved ClientApp bundle %s %s sha256 %s", app.fab_id, app.version, app.sha256)
    if not apps:
        log.warning("no approved ClientApp bundle: every hub message will fail (`site_node apps approve`)")


def supernode_argv(
    home: SiteHome, cfg: SiteConfig, engine_address: str, insecure: bool, token: Path, key: Path, port: int
) -> list[str]:
    exe = Path(sys.executable).with_name("flower-supernode")
    argv = [
        str(exe) if exe.exists() else (shutil.which("flower-supernode") or "flower-supernode"),
        "--superlink",
        cfg.superlink,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-config",
        f'engine="{engine_address}" engine-token-file="{token}"',
    ]
    if insecure:
        log.warning("INSECURE: no TLS and no node authentication towards the hub")
        return argv + ["--insecure"]
    if cfg.root_certificates is None or not cfg.root_certificates.is_file():
        raise ConfigError(
            f"{home.config_file}: [hub] root_certificates must name the study CA file "
            f"(got {cfg.root_certificates}); or pass --insecure for a test setup"
        )
    return argv + ["--root-certificates", str(cfg.root_certificates), "--auth-supernode-private-key", str(key)]


def engine_server(home: SiteHome, cfg: SiteConfig, engine: SiteEngine) -> EngineServer:
    """A 0600 Unix socket in the site home (what the sandboxed ClientApp dials), else TCP on 127.0.0.1."""
    sock = home.clientapp_dir / "engine.sock"
    if cfg.engine_port == 0 and EngineServer.unix_path_fits(sock):
        return EngineServer(engine, home.token(), unix_path=sock)
    why = f"[engine] port = {cfg.engine_port} is set" if cfg.engine_port else f"the path {sock} is too long"
    log.warning("engine on TCP 127.0.0.1, not a Unix socket: %s", why)
    return EngineServer(engine, home.token(), port=cfg.engine_port)


def setup_logging(home: SiteHome) -> None:
    home.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(home.logs_dir / "engine.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler()  # the operator who started `serve` in a terminal sees the same events
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    # opacus logs one INFO line per LoRA module at every DP training job: hundreds of lines that hide the job's own.
    logging.getLogger("opacus").setLevel(logging.WARNING)


def _state(
    cfg: SiteConfig,
    engine: SiteEngine,
    server: EngineServer,
    supernode: Child | None,
    console: ConsoleThread | None,
    started: float,
) -> heartbeat.ServeState:
    """What this serve runs, for the console's Status page and `site_node status`."""
    return heartbeat.ServeState(
        pid=os.getpid(),
        started_at=started,
        updated_at=time.time(),
        engine_address=server.address,
        supernode_running=supernode is not None and supernode.alive(),
        supernode_pid=supernode.proc.pid if supernode is not None else None,
        sandbox=sandbox.grants().describe() if cfg.sandbox else "OFF ([supernode] sandbox = false)",
        model_hash=engine.model_hash,
        model_error=engine.model_error,
        console_url=console.url if console is not None else None,
    )


def serve(
    home: SiteHome, *, insecure: bool = False, with_supernode: bool = True, allow_weak_sandbox: bool = False
) -> int:
    """Run until SIGTERM, SIGINT or SIGHUP, or until the SuperNode dies; always stops what it started."""
    with owner_only():  # job folders, logs and the SuperNode's own files (it inherits the umask)
        return _serve(home, insecure, with_supernode, allow_weak_sandbox)


def _serve(home: SiteHome, insecure: bool, with_supernode: bool, allow_weak_sandbox: bool) -> int:
    cfg = home.config()
    cfg_insecure = insecure or cfg.insecure
    setup_logging(home)
    stop = catch_stop_signals("site_node serve")  # SIGTERM, SIGINT, SIGHUP: leave the loop, stop the children
    engine = SiteEngine(home)
    on_start(engine.audit, home.approved_dir, cfg.policy.as_dict())
    server = engine_server(home, cfg, engine)
    engine.start()
    server.start()
    (home.logs_dir / "engine.address").write_text(server.address)
    log.info("site %s engine listening on %s", cfg.name, server.address)
    supernode, watch, console = None, None, ConsoleThread.start_for(home, cfg)
    try:
        if with_supernode and not stop.is_set():  # a signal while the model loaded: start nothing more
            via = f" through the proxy {proxy_shown(cfg.https_proxy)}" if cfg.https_proxy else ""
            watch = SupernodeWatch(home.logs_dir / "supernode.log", cfg.superlink + via)
            token, key = prepare_clientapp_dir(home)
            pin_app_bundles(home)
            port = cfg.supernode_port or free_port()
            argv, env = supernode_command(
                home,
                cfg,
                supernode_argv(home, cfg, server.address, cfg_insecure, token, key, port),
                supernode_port=port,
                engine_address=server.address,
                allow_weak=allow_weak_sandbox,
            )
            supernode = Child("supernode", argv, home.logs_dir / "supernode.log", env=env, own_group=False)
        started, beat = time.time(), 0.0
        while not stop.wait(1.0):
            if watch is not None:
                watch.poll()
            if supernode is not None and not supernode.alive():
                log.error("the SuperNode exited with %s:\n%s", supernode.proc.returncode, supernode.tail())
                return 1
            if time.time() - beat >= heartbeat.STALE_AFTER_S / 4:
                beat = time.time()
                heartbeat.write(home.logs_dir, _state(cfg, engine, server, supernode, console, started))
        return 0
    finally:
        heartbeat.clear(home.logs_dir)
        if console is not None:
            console.stop()
        if supernode is not None:
            supernode.stop()
        server.stop()
        engine.stop()
        log.info("site %s stopped", cfg.name)
