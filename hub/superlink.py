"""The SuperLink process and the `flwr` CLI calls the hub makes (register/unregister nodes, run, ls)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hub.home import HubHome
from protocols.errors import ConfigError, SurgFedError
from protocols.procs import Child, flower_env

CONNECTION = "hub"
APP_DIR = Path(__file__).resolve().parent / "flower_app"


def _exe(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or name)


def write_flwr_config(home: HubHome, insecure: bool) -> None:
    """Only our own connection in FLWR_HOME (flwr writes a remote default otherwise)."""
    cfg = home.config()
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f'address = "127.0.0.1:{cfg.internal_port}"',
    ]
    lines.append("insecure = true" if insecure else f'root-certificates = "{home.ca_cert}"')
    home.flwr_home.mkdir(parents=True, exist_ok=True)
    (home.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


def start_superlink(home: HubHome, insecure: bool) -> Child:
    cfg = home.config()
    write_flwr_config(home, insecure)
    argv = [
        _exe("flower-superlink"),
        "--host",
        "127.0.0.1",
        "--port",
        str(cfg.internal_port),
        "--database",
        str(home.superlink_db),
        "--disable-runtime-dependency-installation",
    ]
    if insecure:
        argv.append("--insecure")
    else:
        argv += [
            "--ssl-ca-certfile",
            str(home.ca_cert),
            "--ssl-certfile",
            str(home.server_cert),
            "--ssl-keyfile",
            str(home.server_key),
            "--enable-supernode-auth",
        ]
    return Child("superlink", argv, home.logs_dir / "superlink.log", env=flower_env(home.flwr_home), own_group=False)


def flwr(home: HubHome, args: Sequence[str], timeout: float = 120.0) -> dict[str, Any]:
    """Run a `flwr ... --format json` command against the hub's SuperLink and return its JSON."""
    try:
        proc = subprocess.run(
            [_exe("flwr"), *args, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=flower_env(home.flwr_home),
            cwd=home.root,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SurgFedError(
            f"`flwr {' '.join(args)}` did not answer in {timeout:.0f}s; is `hub serve` running?"
        ) from exc
    start = proc.stdout.find("{")
    try:
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    except ValueError:
        data = {}
    if proc.returncode != 0 or not data.get("success", False):
        detail = data.get("error-message") or (proc.stderr or proc.stdout).strip()[-800:]
        raise SurgFedError(f"`flwr {' '.join(args)}` failed: {detail}")
    return data


def register_node(home: HubHome, name: str, public_key_file: Path) -> int:
    data = flwr(home, ["supernode", "register", str(public_key_file), CONNECTION, "--name", name])
    try:
        return int(data["node-id"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"the SuperLink did not return a node id for {name}: {data}") from exc


def unregister_node(home: HubHome, node_id: int) -> None:
    flwr(home, ["supernode", "unregister", str(node_id), CONNECTION])


def start_run(home: HubHome, launch_id: str) -> str:
    config = f'hub-home="{home.root}" launch-id="{launch_id}"'
    data = flwr(home, ["run", str(APP_DIR), CONNECTION, "--run-config", config])
    return str(data["run-id"])


def run_status(home: HubHome, run_id: str) -> dict[str, Any]:
    data = flwr(home, ["ls", CONNECTION, "--run-id", run_id])
    runs = data.get("runs", [])
    return dict(runs[0]) if runs else {}
