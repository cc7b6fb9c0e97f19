"""Tamper-evident audit log: append-only JSON lines, each holding the hash of the previous entry."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import SurgFedError

GENESIS = "0" * 64
MAX_TEXT = 500  # characters of one string value
MAX_ITEMS = 64  # entries of one list or mapping value
MAX_ENTRY = 16 * 1024  # bytes of one serialised entry; larger values are replaced by their digest


class AuditError(SurgFedError):
    """The audit log was changed, truncated or reordered."""


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def payload_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def capped(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of `value` with every string, list and mapping cut to the caps (marked as cut)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + f"...[{len(value)} chars]"
    if depth >= 4:
        return f"[nested {type(value).__name__}]"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k)[:64]: capped(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["..."] = f"{len(items) - MAX_ITEMS} more"
        return out
    if isinstance(value, (list, tuple)):
        cut = [capped(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
        return cut + ([f"... {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else [])
    return capped(str(value), depth)


@dataclass(frozen=True)
class Anchor:
    """An entry's position and hash as the hub received it with a released reply."""

    seq: int
    head: str


class AuditLog:
    """Appends are serialised by a lock (threads) and a file lock (other site commands), and fsynced.

    The head (last seq, last hash, file size) is kept in memory. Another process's appends are read from
    the known end onwards and must chain from the head; a file that shrank or does not chain is refused.
    Entries hold no file names or identifiers; every value is capped before it is written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seq, self._head, self._size = 0, GENESIS, 0
        self._catch_up()

    @property
    def head(self) -> Anchor:
        with self._lock:
            return Anchor(self._seq, self._head)

    def _catch_up(self) -> None:
        """Follow entries appended since the known end (all of them the first time), checking the chain."""
        size = self.path.stat().st_size if self.path.is_file() else 0
        if size < self._size:
            raise AuditError(f"{self.path}: the audit log shrank from {self._size} to {size} bytes (truncated)")
        if size == self._size:
            return
        with self.path.open("rb") as fh:
            fh.seek(self._size)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    raise AuditError(f"{self.path}: the last entry is incomplete (edited or truncated)")
                try:
                    entry = json.loads(raw)
                except ValueError:
                    raise AuditError(f"{self.path}: entry after {self._seq} is not valid JSON (edited)") from None
                if entry.get("prev") != self._head or entry.get("seq") != self._seq + 1:
                    raise AuditError(f"{self.path}: entry {entry.get('seq')} does not follow entry {self._seq}")
                self._seq, self._head = int(entry["seq"]), str(entry["hash"])
                self._size += len(raw)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created owner-only whoever writes first (the CLI runs under umask 077; library callers may not).
            with open(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes
                self._catch_up()
                entry = {
                    "seq": self._seq + 1,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "event": str(event)[:64],
                    **{k: capped(v) for k, v in fields.items()},
                    "prev": self._head,
                }
                if len(json.dumps(entry)) > MAX_ENTRY:
                    fields_digest = payload_digest({k: capped(v) for k, v in fields.items()})
                    entry = {k: entry[k] for k in ("seq", "time", "event", "prev")} | {"fields_digest": fields_digest}
                entry["hash"] = _digest(entry)
                line = json.dumps(entry, sort_keys=True) + "\n"
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
                self._seq, self._head = entry["seq"], entry["hash"]
                self._size += len(line.encode("utf-8"))
            return entry

    def entries(self) -> list[dict[str, Any]]:
        return list(_read(self.path))


def _read(path: Path) -> Iterator[dict[str, Any]]:
    if not Path(path).is_file():
        return
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def verify(path: Path) -> int:
    """Number of entries when the chain is intact; AuditError naming the first bad line otherwise."""
    return len(verify_chain(path))


def verify_chain(path: Path) -> dict[int, str]:
    """Every entry's hash by seq when the chain is intact; AuditError naming the first bad line otherwise."""
    if not Path(path).is_file():
        raise AuditError(f"audit log {path} does not exist")
    prev, expected_seq, hashes = GENESIS, 1, {}
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise AuditError(f"{path}:{lineno}: entry is not valid JSON (edited or truncated)") from None
            if entry.get("prev") != prev:
                raise AuditError(
                    f"{path}:{lineno}: entry {entry.get('seq')} does not follow the previous entry "
                    "(removed or reordered)"
                )
            if entry.get("seq") != expected_seq:
                raise AuditError(f"{path}:{lineno}: expected entry {expected_seq}, found {entry.get('seq')}")
            if entry.get("hash") != _digest(entry):
                raise AuditError(f"{path}:{lineno}: entry {entry.get('seq')} was changed after it was written")
            prev, expected_seq = entry["hash"], expected_seq + 1
            hashes[int(entry["seq"])] = str(entry["hash"])
    return hashes


def load_anchors(path: Path) -> list[Anchor]:
    """Anchors exported by the hub (`hub sites anchors`): JSON lines with `seq` and `head`."""
    anchors = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            anchors.append(Anchor(int(row["seq"]), str(row["head"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"{path}:{lineno}: expected a JSON object with seq and head, got {line[:80]!r}") from exc
    return sorted(set(anchors), key=lambda a: a.seq)


def verify_anchored(path: Path, anchors: list[Anchor]) -> int:
    """Chain intact AND every anchor the hub holds is still in it; AuditError naming the first that is not."""
    hashes = verify_chain(path) if Path(path).is_file() else {}
    for anchor in anchors:
        if hashes.get(anchor.seq) != anchor.head:
            found = "missing" if anchor.seq not in hashes else f"hash {hashes[anchor.seq][:16]}..."
            raise AuditError(
                f"{path}: anchor seq {anchor.seq} (hash {anchor.head[:16]}...) held by the hub does not match "
                f"the log ({found}): the log was truncated, emptied or rewritten after that reply left"
            )
    return len(hashes)
