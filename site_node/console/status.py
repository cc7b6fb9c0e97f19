"""The site's status, for the console's Status page and `site_node status` (the same dictionary)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from protocols import __version__
from protocols.contract import CONTRACT_VERSION
from protocols.errors import SurgFedError
from site_node import sandbox
from site_node.approvals import list_approved, list_pending
from site_node.audit import AuditLog
from site_node.console import heartbeat
from site_node.home import SiteHome
from site_node.releases import pending


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def engine_answers(address: str) -> bool:
    """The engine accepts a connection at its address (nothing is sent: it closes idle connections itself)."""
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(address[len("unix:") :])
        else:
            host, _, port = address.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=2):
                pass
    except (OSError, ValueError):
        return False
    return True


def last_contact(home: SiteHome) -> str | None:
    """When a message from the hub last reached the engine (the audit log's last `request` entry)."""
    try:
        entries = AuditLog(home.audit_log).entries()
    except (OSError, ValueError, SurgFedError):
        return None
    return next((str(e["time"]) for e in reversed(entries) if e.get("event") == "request"), None)


def site_status(home: SiteHome) -> dict[str, Any]:
    """What runs, what it talks to, which model and software, the sandbox, storage and what waits for a decision."""
    cfg = home.config()
    state = heartbeat.read(home.logs_dir)
    disk = shutil.disk_usage(home.root)
    if cfg.insecure:
        tls = "INSECURE: no TLS, no node authentication"
    else:
        tls = f"TLS, study CA {cfg.root_certificates}" if cfg.root_certificates else "no study CA configured"
    return {
        "site": cfg.name,
        "release_mode": cfg.release.value,
        "serve_running": state is not None,
        "serve_pid": state.pid if state else None,
        "engine_up": bool(state and engine_answers(state.engine_address)),
        "engine_address": state.engine_address if state else None,
        "supernode_running": bool(state and state.supernode_running),
        "hub_address": cfg.superlink,
        "hub_tls": tls,
        "last_contact": last_contact(home),
        "model_dir": str(cfg.model_dir) if cfg.model_dir else None,
        "model_hash": state.model_hash if state else None,
        "model_error": state.model_error if state else None,
        "software_version": __version__,
        "contract_version": CONTRACT_VERSION,
        "sandbox": state.sandbox if state else sandbox.grants().describe() + " (kernel now; serve not running)",
        "sandbox_enabled": cfg.sandbox,
        "store_bytes": _tree_bytes(home.store_dir),
        "jobs_bytes": _tree_bytes(home.jobs_dir),
        "disk_free_bytes": disk.free,
        "disk_total_bytes": disk.total,
        "pending_releases": len(pending(home)),
        "pending_protocols": len(list_pending(home.approved_dir)),
        "approved_protocols": len(list_approved(home.approved_dir)),
        "console_url": state.console_url if state else None,
    }


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def status_lines(status: dict[str, Any]) -> list[str]:
    """`site_node status` in the terminal: one line per fact, the same facts as the console's Status page."""
    yes = {True: "yes", False: "NO"}
    serve = f"running, pid {status['serve_pid']}" if status["serve_running"] else "NOT running"
    waiting = f"{status['pending_releases']} release(s), {status['pending_protocols']} protocol request(s)"
    engine = (
        f"{yes[status['engine_up']]} ({status['engine_address']})"
        if status["serve_running"]
        else "NO (serve not running)"
    )
    return [
        f"site               {status['site']} (release: {status['release_mode']})",
        f"site_node serve    {serve}",
        f"engine up          {engine}",
        f"SuperNode          {'running' if status['supernode_running'] else 'NOT running'}",
        f"hub                {status['hub_address']} ({status['hub_tls']})",
        f"last contact       {status['last_contact'] or 'never'}",
        f"model              {status['model_dir'] or 'not configured'}",
        f"model manifest     {status['model_hash'] or status['model_error'] or 'unknown until serve loads it'}",
        f"software           surgfed {status['software_version']}, message contract v{status['contract_version']}",
        f"sandbox            {status['sandbox'] if status['sandbox_enabled'] else 'OFF ([supernode] sandbox = false)'}",
        f"store              {human_bytes(status['store_bytes'])} (jobs {human_bytes(status['jobs_bytes'])}); "
        f"{human_bytes(status['disk_free_bytes'])} free of {human_bytes(status['disk_total_bytes'])}",
        f"waiting for you    {waiting}",
        f"approved protocols {status['approved_protocols']}",
        f"console            {status['console_url'] or 'not running (site_node console)'}",
    ]
