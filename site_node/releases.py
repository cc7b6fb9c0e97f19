"""Manual release: finished jobs wait for the local data owner, who sees the exact payload before it leaves."""

from __future__ import annotations

import json

from protocols.contract import JobState, Reason
from protocols.errors import SurgFedError
from site_node.audit import AuditLog, payload_digest
from site_node.home import SiteHome
from site_node.jobs import Job, JobStore


def pending(home: SiteHome) -> list[Job]:
    return [j for j in JobStore(home.jobs_dir).all() if j.state is JobState.AWAITING_APPROVAL]


def _awaiting(home: SiteHome, job_id: str) -> Job:
    job = JobStore(home.jobs_dir).get(job_id)
    if job is None:
        raise SurgFedError(f"no job {job_id!r} at this site; see `site_node releases list`")
    if job.state is not JobState.AWAITING_APPROVAL:
        raise SurgFedError(f"job {job_id} is {job.state.value}, not awaiting approval")
    return job


def show(home: SiteHome, job_id: str) -> str:
    """The exact records that would leave, as JSON."""
    job = JobStore(home.jobs_dir).get(job_id)
    if job is None or job.payload is None:
        raise SurgFedError(f"no finished job {job_id!r} with a payload at this site")
    return json.dumps(job.payload, indent=2, sort_keys=True)


def decide(home: SiteHome, job_id: str, approve: bool, note: str = "", *, by: str = "") -> Job:
    """Release or reject a waiting job; `by` is the operator (the console's login name, or the OS account)."""
    job = _awaiting(home, job_id)
    state = JobState.DONE if approve else JobState.REJECTED
    # The note stays at the site (job file, audit log); the hub sees only the code rejected-by-owner.
    detail = "" if approve else f"the site's data owner rejected the release{': ' + note if note else ''}"
    reason = "" if approve else Reason.REJECTED_BY_OWNER.value
    job = JobStore(home.jobs_dir).update(job_id, state=state, detail=detail, reason=reason)
    AuditLog(home.audit_log).append(
        "release-approved" if approve else "release-rejected",
        job_id=job_id,
        digest=payload_digest(job.payload),
        operator=by or None,
        note=note or None,
    )
    return job
