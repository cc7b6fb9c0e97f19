"""What a site has already answered: each question once, each study on one data snapshot, one adapter per round."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.contract import Reason
from site_node.jobs import JobRefused
from site_node.store import DataStore


@dataclass(frozen=True)
class Snapshot:
    """The store as a job sees it: the manifest's digest and the videos it lists."""

    digest: str
    videos: frozenset[str]

    def difference(self, other: Snapshot) -> int:
        """How many videos one snapshot has that the other lacks (both ways)."""
        return len(self.videos ^ other.videos)


def store_snapshot(store: DataStore) -> Snapshot:
    raw = store.manifest_file.read_bytes() if store.manifest_file.is_file() else b""
    videos = frozenset(f"{d.dataset_id}/{v.video_id}" for d in store.datasets() for v in d.videos)
    return Snapshot(hashlib.sha256(raw).hexdigest(), videos)


class JobLedger:
    """One JSON file beside the jobs; pruning jobs never forgets a question it answered."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    def _read(self) -> dict[str, dict[str, Any]]:
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return {k: dict(data.get(k, {})) for k in ("questions", "snapshots", "adapters")}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def snapshot(self, study: str) -> Snapshot | None:
        entry = self._read()["snapshots"].get(study)
        return Snapshot(entry["digest"], frozenset(entry["videos"])) if entry else None

    def check_question(self, key: str, job_id: str, reusable: Callable[[str], bool]) -> None:
        """Refuse a second job for an answered (protocol, kind, round); a failed job released nothing."""
        holder = self._read()["questions"].get(key)
        if holder is not None and holder != job_id and not reusable(holder):
            raise JobRefused(Reason.ALREADY_ANSWERED, f"{key} was already answered by job {holder}")

    def check_adapter(self, key: str, digest: str) -> None:
        known = self._read()["adapters"].get(key)
        if known is not None and known != digest:
            raise JobRefused(
                Reason.ADAPTER_MISMATCH,
                f"{key}: the job carries global adapter {digest[:16]}, the site received {known[:16]} for that round",
            )

    def record(self, *, question: str, job_id: str, adapter_key: str, adapter: str, study: str, snap: Snapshot) -> None:
        """Commit a job's claims together, after every check passed."""
        with self._lock:
            data = self._read()
            data["questions"][question] = job_id
            data["adapters"].setdefault(adapter_key, adapter)
            data["snapshots"][study] = {"digest": snap.digest, "videos": sorted(snap.videos)}
            self._write(data)

    @property
    def lock(self) -> threading.RLock:
        return self._lock
