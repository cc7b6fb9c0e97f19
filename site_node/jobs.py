"""Jobs at a site: one JSON file per job, replaced atomically, so nothing is lost when the engine restarts."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocols.contract import JobKind, JobState, WireRecords
from protocols.errors import EngineError

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class Job:
    job_id: str
    kind: JobKind
    study: str
    round: int
    protocol_hash: str
    state: JobState = JobState.QUEUED
    detail: str = ""
    progress: float = 0.0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    payload: WireRecords | None = None  # the gated records, exactly as they would leave

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"], data["state"] = self.kind.value, self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(**{**data, "kind": JobKind(data["kind"]), "state": JobState(data["state"])})


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def _path(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise EngineError(f"invalid job id {job_id!r}")
        return self.root / f"{job_id}.json"

    def work_dir(self, job_id: str) -> Path:
        d = self.root / job_id
        d.mkdir(exist_ok=True)
        return d

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
            return sorted(
                (Job.from_json(json.loads(p.read_text())) for p in self.root.glob("*.json")), key=lambda j: j.created
            )

    def update(self, job_id: str, **changes: Any) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise EngineError(f"unknown job {job_id!r}")
            for key, value in changes.items():
                setattr(job, key, value)
            self.save(job)
            return job
