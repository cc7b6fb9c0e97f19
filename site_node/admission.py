"""Whether the site takes a SUBMIT: approved protocol by hash, its plan, the site policy, once per question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.contract import JobKind, JobState, Reason, WireRecords
from protocols.errors import ProtocolError
from protocols.records import adapter_digest
from protocols.study import OutputLevel, StudyProtocol
from site_node.approvals import approved, approved_snapshot, is_approved
from site_node.home import SiteConfig, SiteHome
from site_node.job_ledger import JobLedger, Snapshot
from site_node.jobs import Job, JobRefused, JobStore


@dataclass(frozen=True)
class Admitted:
    protocol: StudyProtocol
    question: str
    adapter_key: str
    snapshot: Snapshot


def check_plan(protocol: StudyProtocol, job: Job, config: SiteConfig) -> None:
    """The job must be one the approved protocol plans, and the site policy must allow the protocol."""
    if job.study != protocol.study_id:
        raise JobRefused(
            Reason.PROTOCOL_MISMATCH, f"job names study {job.study[:64]!r}, the protocol is {protocol.study_id}"
        )
    if job.round not in protocol.round_numbers:
        raise JobRefused(
            Reason.PROTOCOL_MISMATCH, f"round {job.round} is outside the protocol's rounds {protocol.round_numbers}"
        )
    if job.kind is JobKind.TRAIN and (protocol.finetune is None or job.round < 1):
        raise JobRefused(Reason.PROTOCOL_MISMATCH, f"the protocol plans no training in round {job.round}")
    if protocol.privacy.outputs is not OutputLevel.AGGREGATE:
        raise JobRefused(Reason.POLICY, f"protocol asks for {protocol.privacy.outputs.value} outputs")
    policy = config.policy
    refused_tasks = [t.name for t in protocol.tasks if not policy.allows_task(t.name)]
    if refused_tasks:
        raise JobRefused(Reason.POLICY, f"the site policy does not allow tasks {refused_tasks}")
    if protocol.round_plan.rounds > policy.max_rounds:
        raise JobRefused(
            Reason.POLICY, f"{protocol.round_plan.rounds} rounds asked, the site policy allows {policy.max_rounds}"
        )


def check_adapter(protocol: StudyProtocol, job: Job, values: dict[str, Any], records: WireRecords) -> str:
    """The global adapter's digest and its ledger key: one adapter per round (round r's, sent again at r+1)."""
    digest = adapter_digest(records)
    if digest != "none" and protocol.finetune is None:
        raise JobRefused(
            Reason.ADAPTER_MISMATCH, f"an adapter arrived for study {protocol.study_id}, which trains none"
        )
    claimed = values.get("adapter-sha256")
    if claimed is not None and claimed != digest:
        raise JobRefused(Reason.ADAPTER_MISMATCH, "the adapter does not match the adapter-sha256 the job names")
    job.adapter = digest
    # An evaluation of round r carries round r's global adapter; training round r starts from round r-1's.
    adapter_round = job.round - 1 if job.kind is JobKind.TRAIN else job.round
    return f"{protocol.content_hash}:{adapter_round}"


def check_snapshot(home: SiteHome, ledger: JobLedger, protocol: StudyProtocol, current: Snapshot, floor: int) -> None:
    """A study stays on the store snapshot of its first job, unless the operator approved a new one that differs
    by at least `floor` videos (fewer would let the hub difference out single videos)."""
    bound = ledger.snapshot(protocol.study_id)
    if bound is None or bound.digest == current.digest:
        return
    if approved_snapshot(home.approved_dir, protocol.content_hash) != current.digest:
        raise JobRefused(
            Reason.SNAPSHOT_CHANGED,
            f"the store changed since study {protocol.study_id}'s first job; the operator may allow the new snapshot "
            f"with `site_node protocols approve {protocol.content_hash} --snapshot`",
        )
    if current.difference(bound) < floor:
        raise JobRefused(
            Reason.SNAPSHOT_CHANGED,
            f"the new snapshot differs from the study's by {current.difference(bound)} videos, fewer than {floor}",
        )


def admit(
    home: SiteHome, config: SiteConfig, jobs: JobStore, ledger: JobLedger, job: Job, current: Snapshot, **req: Any
) -> Admitted:
    """Every check a SUBMIT passes before it is queued (`req`: the job's values and the request's records)."""
    if not is_approved(home.approved_dir, job.protocol_hash):
        raise JobRefused(Reason.PROTOCOL_NOT_APPROVED, f"protocol {job.protocol_hash[:16]} is not approved")
    try:
        protocol = approved(home.approved_dir, job.protocol_hash)
    except ProtocolError as exc:
        raise JobRefused(Reason.PROTOCOL_NOT_APPROVED, str(exc)) from exc
    check_plan(protocol, job, config)
    adapter_key = check_adapter(protocol, job, req["values"], req["records"])
    question = f"{protocol.content_hash}:{job.kind.value}:{job.round}"

    def reusable(holder: str) -> bool:
        held = jobs.get(holder)
        return held is not None and held.state is JobState.FAILED

    ledger.check_question(question, job.job_id, reusable)
    ledger.check_adapter(adapter_key, job.adapter)
    check_snapshot(home, ledger, protocol, current, config.policy.cell_floor(protocol.privacy.min_videos))
    job.snapshot = current.digest
    return Admitted(protocol, question, adapter_key, current)
