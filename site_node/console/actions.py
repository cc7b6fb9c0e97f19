"""The console's buttons: each calls the function its `site_node` command calls, as the signed-in operator."""

from __future__ import annotations

from site_node.console.accounts import AccessError, Operator
from site_node.home import SiteHome
from site_node.protocol_review import approve_reviewed, reject_pending
from site_node.releases import decide


def _owner(operator: Operator, what: str) -> None:
    if not operator.role.can_decide:
        raise AccessError(f"operator {operator.name!r} is a {operator.role.value}; only the data owner may {what}")


def decide_release(home: SiteHome, operator: Operator, job_id: str, approve: bool, note: str = "") -> str:
    """`site_node releases approve|reject JOB`; returns the job's new state."""
    _owner(operator, "approve or reject a release")
    return decide(home, job_id, approve=approve, note=note.strip(), by=operator.name).state.value


def approve_protocol(home: SiteHome, operator: Operator, content_hash: str, force_reason: str = "") -> str:
    """`site_node protocols approve HASH [--force --reason]`; returns the study id."""
    _owner(operator, "approve a protocol")
    pinned = approve_reviewed(home, content_hash, force_reason=force_reason.strip() or None, by=operator.name)
    return pinned.study_id


def reject_protocol(home: SiteHome, operator: Operator, content_hash: str, note: str = "") -> None:
    """`site_node protocols reject HASH [--note]`."""
    _owner(operator, "reject a protocol")
    reject_pending(home, content_hash, note=note.strip(), by=operator.name)
