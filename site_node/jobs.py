"""Jobs at a site: one JSON file per job, replaced atomically, so nothing is lost when the engine restarts."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from protocols.contract import JOB_ID, JobKind, JobState, Reason, WireRecords
from protocols.errors import EngineError, SurgFedError

# Most bytes the jobs folder may hold (job files, incoming adapters, local predictions); `site_node jobs prune`
# frees space. A 7B LoRA adapter is ~81 MB per round, so this holds a few studies' worth.
DEFAULT_QUOTA_BYTES = 4 * 1024**3


class JobRefused(SurgFedError):
    """The site refuses a job; `reason` is the only part that leaves, the message stays in the job folder."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Job:
    job_id: str
    kind: JobKind
    study: str
    round: int
    protocol_hash: str
    state: JobState = JobState.QUEUED
    detail: str = ""  # free text for the site's operator; never leaves the site
    reason: str = ""  # a Reason value for failed and refused jobs; this leaves
    progress: float = 0.0
    snapshot: str = ""  # the store snapshot (manifest digest) this job is bound to
    adapter: str = ""  # adapter_digest of the global adapter the job carried
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    payload: WireRecords | None = None  # the gated records, exactly as they would leave

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"], data["state"] = self.kind.value, self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "kind": JobKind(data["kind"]), "state": JobState(data["state"])})


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise JobRefused(Reason.BAD_REQUEST, f"invalid job id {str(job_id)[:64]!r}: expected {JOB_ID.pattern}")
    return job_id


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class JobStore:
    def __init__(self, root: Path, *, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self._lock = threading.RLock()

    def _path(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise EngineError(f"invalid job id {job_id[:64]!r}")
        return self.root / f"{job_id}.json"

    def work_dir(self, job_id: str) -> Path:
        d = self._path(job_id).with_suffix("")
        d.mkdir(exist_ok=True)
        return d

    def used_bytes(self) -> int:
        return _size(self.root)

    def reserve(self, n_bytes: int) -> None:
        """Refuse to store `n_bytes` more when the jobs folder would pass its quota."""
        used = self.used_bytes()
        if used + n_bytes > self.quota_bytes:
            raise JobRefused(
                Reason.STORAGE_FULL,
                f"job storage would hold {used + n_bytes} bytes, over its quota of {self.quota_bytes} bytes; "
                "free space with `site_node jobs prune`",
            )

    def get(self, job_id: str) -> Job | None:
        path = self._path(job_id)
        with self._lock:
            return Job.from_json(json.loads(path.read_text())) if path.is_file() else None

    def save(self, job: Job) -> None:
        job.updated = time.time()
        path = self._path(job.job_id)
        with self._lock:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(job.to_json(), indent=1))
            os.replace(tmp, path)

    def all(self) -> list[Job]:
        with self._lock:
            files = (p for p in self.root.glob("*.json") if p.is_file() and JOB_ID.fullmatch(p.stem))
            return sorted((Job.from_json(json.loads(p.read_text())) for p in files), key=lambda j: j.created)

    def update(self, job_id: str, **changes: Any) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise EngineError(f"unknown job {job_id!r}")
            for key, value in changes.items():
                setattr(job, key, value)
            self.save(job)
            return job

    def prune(self, older_than_s: float, *, now: float | None = None) -> list[str]:
        """Delete finished jobs (file and folder) last changed before `older_than_s` ago; the answered-questions
        ledger is kept, so a pruned question stays answered."""
        cutoff = (now if now is not None else time.time()) - older_than_s
        removed = []
        with self._lock:
            for job in self.all():
                if job.state.final and job.updated <= cutoff:
                    shutil.rmtree(self.root / job.job_id, ignore_errors=True)
                    self._path(job.job_id).unlink(missing_ok=True)
                    removed.append(job.job_id)
        return removed
