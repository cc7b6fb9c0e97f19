"""Child processes for hub and site: own process group, logs to a file, stopped as a group, also on failure."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from protocols.proctree import descendants, stop_all

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A started command; `stop()` terminates it and, with `own_group`, its whole group (e.g. superexec children).

    Top-level services get their own group; what a service starts for itself stays in the service's group
    (`own_group=False`), so that stopping the service's group stops them too, even if the service is killed.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        own_group: bool = True,
    ) -> None:
        self.name = name
        self.own_group = own_group
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: a service's log can name files and hosts.
        self._log = os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=own_group,
            stdin=subprocess.DEVNULL,
        )
        log.info("started %s (pid %d), log %s", name, self.proc.pid, log_file)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        (os.killpg if self.own_group else os.kill)(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        # Noted before the leader goes: once it is gone, its orphans hang off pid 1 and no longer look like ours
        # (flower-superlink leaves its flower-superexec running when it gets SIGTERM).
        started = descendants(self.proc.pid) if self.proc.poll() is None else {}
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    self._signal(sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The group may outlive its leader (a superexec watching its parent): clear it too.
        if self.own_group:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        stop_all(started, timeout=min(timeout, 5.0))
        self._log.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_for(check: Callable[[], bool], timeout: float, what: str, child: Child | None = None) -> None:
    """Poll `check` until true; fail naming `what` (and the child's last log lines if it died)."""
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited with {child.proc.returncode} while waiting for {what}:\n{child.tail()}"
            )
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# What a site's SuperNode and ClientApps inherit from the engine's environment; nothing else (a hospital's
# HOSPITAL_DB_PASSWORD or cloud credentials stay behind). Proxy variables pass: the SuperNode dials out through them.
SITE_ENV_ALLOW = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    | {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}
)
SITE_ENV_PREFIXES = ("LC_",)


def site_env(source: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of `source` (default: this process's environment)."""
    src = dict(os.environ) if source is None else source
    return {k: v for k, v in src.items() if k in SITE_ENV_ALLOW or k.startswith(SITE_ENV_PREFIXES)}


def flower_env(flwr_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Flower process: its own FLWR_HOME, no telemetry, no update check, offline hub.

    `base` is what it starts from (default: this process's whole environment, as the hub's processes use).
    """
    env = dict(os.environ) if base is None else dict(base)
    # Flower starts helpers (flower-superexec, flwr-clientapp) by name: put this interpreter's bin first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env
