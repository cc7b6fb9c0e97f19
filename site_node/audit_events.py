"""Audit events beyond requests and releases: ingest runs, job failures, ledger writes, start-up checks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocols.contract import Reason
from site_node.audit import AuditLog, payload_digest

log = logging.getLogger(__name__)


def job_failed(audit: AuditLog, job_id: str, reason: Reason) -> None:
    """A failed job: its id and reason code (the full text stays in the job folder and the engine log)."""
    audit.append("job-failed", job_id=job_id, reason=reason.value)


def ingest_run(audit: AuditLog, dataset_id: str, fmt: str, videos: int, statuses: Mapping[str, int]) -> None:
    """An ingest (de-identification + manifest) run: keyed dataset id, format and counts; never names or paths."""
    audit.append(
        "ingest",
        dataset_id=dataset_id,
        format=fmt,
        videos=int(videos),
        files={str(k)[:32]: int(v) for k, v in sorted(statuses.items())},
    )


def deid_run(audit: AuditLog, header: Mapping[str, str], key_source: str, counts: Mapping[str, int]) -> None:
    """A `site_node deid` run: profile, detector, where the key came from and counts per kind and outcome.

    Never names, paths or quarantine reasons (free text that may quote a file): those stay in OUT_DIR's report.
    """
    audit.append(
        "deid",
        profile=str(header.get("profile", ""))[:64],
        profile_digest=str(header.get("profile_digest", ""))[:64],
        detector=str(header.get("out_of_body_detector", ""))[:64],
        key=key_source,
        files={str(k)[:32]: int(v) for k, v in sorted(counts.items())},
    )


def _recorded(audit: AuditLog) -> tuple[set[str], str | None]:
    """Protocol hashes the log records as approved, and the last policy digest it records."""
    hashes: set[str] = set()
    policy: str | None = None
    for entry in audit.entries():
        if entry.get("event") in ("protocol-approved", "approval-found"):
            hashes.add(str(entry.get("protocol_hash")))
        elif entry.get("event") in ("policy", "policy-changed"):
            policy = str(entry.get("digest"))
    return hashes, policy


def on_start(audit: AuditLog, approved_dir: Path, policy: Mapping[str, Any]) -> list[str]:
    """Record approvals that appeared without `protocols approve` (files copied in) and policy changes."""
    notes = []
    recorded, last_policy = _recorded(audit)
    for path in sorted(Path(approved_dir).glob("*.yaml")) if Path(approved_dir).is_dir() else []:
        if path.stem not in recorded:
            audit.append("approval-found", protocol_hash=path.stem[:64], how="file copied without protocols approve")
            notes.append(f"approved protocol {path.stem[:16]}... has no approval in the audit log (copied in)")
    digest = payload_digest(dict(policy))
    if digest != last_policy:
        audit.append("policy" if last_policy is None else "policy-changed", digest=digest, policy=dict(policy))
        if last_policy is not None:
            notes.append(f"the site policy changed since the last start (digest {digest[:16]}...)")
    for note in notes:
        log.warning("audit: %s", note)
    return notes
