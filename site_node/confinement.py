"""How the SuperNode and its ClientApps are confined: Landlock layers, TCP ports, environment allow-list.

Two layers. The SuperNode may read the runtime and its own folder (clientapp/, where the node key is),
write only clientapp/tmp, connect to the hub (and an outbound proxy) and bind its local runtime API port.
Every ClientApp process tree starts through a `flower-superexec` wrapper that adds a second layer: no node
key, only the engine token, TCP only to the SuperNode's local port, FLWR_HOME read-only (only approved
bundles run). The engine itself is reached over its Unix socket.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from protocols.errors import ConfigError
from protocols.procs import flower_env, site_env
from site_node import sandbox
from site_node.home import SiteConfig, SiteHome

log = logging.getLogger(__name__)
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# Scheme-qualified (httpx reads them so): the plain-HTTP runtime API on loopback never goes through a proxy,
# while HTTPS to the hub still does, even to a hub on loopback.
_LOOPBACK = ("http://127.0.0.1", "http://localhost")


def _port(address: str, what: str) -> int:
    try:
        port = urlsplit(address if "//" in address else f"//{address}").port
    except ValueError as exc:
        raise ConfigError(f"{what}: cannot read a port from {address!r}: {exc}") from None
    if port is None:
        raise ConfigError(f"{what}: expected HOST:PORT, got {address!r}")
    return port


def outbound_ports(cfg: SiteConfig, env: dict[str, str]) -> list[int]:
    """The hub's port and any outbound proxy's: the only TCP the SuperNode may open beyond its own."""
    ports = {_port(cfg.superlink, "[hub] superlink")}
    for var in _PROXY_VARS:
        if env.get(var):
            ports.add(_port(env[var], var))
    return sorted(ports)


def proxy_env(cfg: SiteConfig, env: dict[str, str]) -> dict[str, str]:
    """`[hub] https_proxy` for the SuperNode's httpx; its plain-HTTP runtime API on loopback never via a proxy."""
    out = dict(env)
    if cfg.https_proxy:
        out["HTTPS_PROXY"] = out["https_proxy"] = cfg.https_proxy
    if any(out.get(var) for var in _PROXY_VARS):
        current = [h for h in (out.get("NO_PROXY") or out.get("no_proxy") or "").split(",") if h.strip()]
        local = [h for h in _LOOPBACK if h not in current]
        out["NO_PROXY"] = out["no_proxy"] = ",".join(current + local)
    return out


def _engine_ports(engine_address: str) -> list[int]:
    return [] if engine_address.startswith("unix:") else [_port(engine_address, "engine address")]


def clientapp_layer(home: SiteHome, supernode_port: int, engine_address: str, command: list[str]) -> list[str]:
    """`command` inside the ClientApp layer: the engine token but not the node key, TCP only to the SuperNode.

    FLWR_HOME (clientapp/flwr) is readable, not writable: flwr-clientapp can load a bundle that
    `site_node apps approve` installed in FLWR_HOME/apps, and fails to install any other (site_node/app_bundles.py).
    """
    d = home.clientapp_dir
    return sandbox.sandboxed_argv(
        command,
        sandbox.runtime_read_paths() + [d / "engine.token", d / "bin", d / "flwr"],
        [d / "tmp"],
        connect=[supernode_port, *_engine_ports(engine_address)],
        scope_signals=False,  # superexec probes its SuperNode with kill(pid, 0); the engine stays out of reach
    )


def write_superexec_wrapper(home: SiteHome, supernode_port: int, engine_address: str) -> Path:
    """A `flower-superexec` first on the SuperNode's PATH: the real one, inside the ClientApp layer."""
    d = home.clientapp_dir
    real = Path(sys.executable).with_name("flower-superexec")
    real_cmd = str(real) if real.exists() else (shutil.which("flower-superexec") or "flower-superexec")
    inner = clientapp_layer(home, supernode_port, engine_address, [real_cmd])
    bin_dir = d / "bin"
    bin_dir.mkdir(mode=0o700, exist_ok=True)
    wrapper = bin_dir / "flower-superexec"
    wrapper.write_text("#!/bin/sh\nexec " + shlex.join(inner) + ' "$@"\n')
    wrapper.chmod(0o500)
    return bin_dir


def supernode_command(
    home: SiteHome,
    cfg: SiteConfig,
    argv: list[str],
    *,
    supernode_port: int,
    engine_address: str,
    allow_weak: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The SuperNode's command line and environment: inside the sandbox unless the site turned it off."""
    d = home.clientapp_dir
    env = proxy_env(cfg, {**flower_env(d / "flwr", site_env()), "TMPDIR": str(d / "tmp"), "HOME": str(d)})
    if not cfg.sandbox:
        log.warning(
            "the SuperNode runs WITHOUT the sandbox ([supernode] sandbox = false): "
            "an app bundle could read this site home, and bundles nobody approved can install themselves and run"
        )
        return argv, env
    grants = sandbox.grants()
    log.info("sandbox: %s", grants.describe())
    if not grants.files:
        if not allow_weak:
            raise ConfigError(
                f"{home.config_file}: this kernel grants no Landlock file rules, so hub-delivered code could read "
                "the site home; refusing to start (`site_node serve --allow-weak-sandbox` to run anyway)"
            )
        log.warning(
            "--allow-weak-sandbox: the SuperNode and ClientApps run WITHOUT any sandbox; app bundles are not pinned"
        )
        return argv, env
    env["PATH"] = os.pathsep.join([str(write_superexec_wrapper(home, supernode_port, engine_address)), env["PATH"]])
    read = sandbox.runtime_read_paths() + ([cfg.root_certificates] if cfg.root_certificates else [])
    connect = outbound_ports(cfg, env) + [supernode_port, *_engine_ports(engine_address)]
    # The SuperNode reads its folder (node key, FLWR_HOME with the approved bundles) and writes only tmp/.
    read.append(d)
    return sandbox.sandboxed_argv(argv, read, [d / "tmp"], connect=connect, bind=[supernode_port]), env
