"""Tamper-evident audit log: append-only JSON lines, each holding the hash of the previous entry."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from protocols.errors import SurgFedError

GENESIS = "0" * 64


class AuditError(SurgFedError):
    """The audit log was changed, truncated or reordered."""


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def payload_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    """Appends are serialised by a lock and fsynced; entries hold no file names or identifiers."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _last(self) -> tuple[int, str]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as fh:
            fh.seek(max(0, self.path.stat().st_size - 65536))
            last = fh.read().splitlines()[-1]
        entry = json.loads(last)
        return int(entry["seq"]), str(entry["hash"])

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            seq, prev = self._last()
            entry = {
                "seq": seq + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": event,
                **fields,
                "prev": prev,
            }
            entry["hash"] = _digest(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verify(path: Path) -> int:
    """Number of entries when the chain is intact; AuditError naming the first bad line otherwise."""
    if not Path(path).is_file():
        raise AuditError(f"audit log {path} does not exist")
    prev, expected_seq = GENESIS, 1
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AuditError(f"{path}:{lineno}: entry is not valid JSON (edited or truncated)") from None
        if entry.get("prev") != prev:
            raise AuditError(
                f"{path}:{lineno}: entry {entry.get('seq')} does not follow the previous entry (removed or reordered)"
            )
        if entry.get("seq") != expected_seq:
            raise AuditError(f"{path}:{lineno}: expected entry {expected_seq}, found {entry.get('seq')}")
        if entry.get("hash") != _digest(entry):
            raise AuditError(f"{path}:{lineno}: entry {entry.get('seq')} was changed after it was written")
        prev, expected_seq = entry["hash"], expected_seq + 1
    return len(lines)
