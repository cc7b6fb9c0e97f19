"""`site_node serve` states what it runs in `logs/serve.json`; the console and `site_node status` read it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STALE_AFTER_S = 20.0  # serve rewrites the file every few seconds; older means it is not running
FILE_NAME = "serve.json"


@dataclass(frozen=True)
class ServeState:
    pid: int
    started_at: float
    updated_at: float
    engine_address: str
    supernode_running: bool
    supernode_pid: int | None
    sandbox: str  # what the kernel granted, in words
    model_hash: str | None
    model_error: str | None
    console_url: str | None


def write(logs_dir: Path, state: ServeState) -> None:
    path = Path(logs_dir) / FILE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def read(logs_dir: Path, *, now: float | None = None) -> ServeState | None:
    """The state `site_node serve` last wrote, or None when it is not running (stale file or dead process)."""
    path = Path(logs_dir) / FILE_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        state = ServeState(**data)
    except (OSError, ValueError, TypeError):
        return None
    if (now if now is not None else time.time()) - state.updated_at > STALE_AFTER_S or not _alive(state.pid):
        return None
    return state


def clear(logs_dir: Path) -> None:
    (Path(logs_dir) / FILE_NAME).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
