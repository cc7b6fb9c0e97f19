"""What the operator sees and checks before approving a protocol: what it asks, and whether it fits this site."""

from __future__ import annotations

from pathlib import Path

from protocols.contract import METRIC_KEYS
from protocols.errors import ProtocolError
from protocols.model_ref import manifest_hash
from protocols.study import StudyProtocol
from site_node.approvals import (
    approve,
    approve_snapshot,
    approved,
    pending_file,
    read_protocol_file,
)
from site_node.audit import AuditLog
from site_node.home import SiteConfig, SiteHome
from site_node.job_ledger import JobLedger, store_snapshot
from site_node.store import DataStore


def site_model_hash(home: SiteHome, config: SiteConfig) -> str | None:
    return manifest_hash(config.model_dir, cache_dir=home.logs_dir) if config.model_dir is not None else None


def source_file(home: SiteHome, target: str) -> Path:
    """A protocol file, or the hash of a pending request the hub sent."""
    path = Path(target)
    if path.is_file():
        return path
    pending = pending_file(home.approved_dir, target)
    if not pending.is_file():
        raise ProtocolError(f"{target[:80]!r} is neither a protocol file nor a pending request's hash")
    return pending


def problems(protocol: StudyProtocol, site: str, model_hash: str | None) -> list[str]:
    """Reasons to refuse the approval (the operator may override them with --force --reason)."""
    found = []
    if site not in protocol.sites:
        found.append(f"the protocol does not name this site {site!r} (sites: {list(protocol.sites)})")
    if model_hash is None:
        found.append("this site has no model configured ([model] dir), so the protocol's model cannot be checked")
    elif model_hash != protocol.model_sha256:
        found.append(f"the protocol's model {protocol.model_sha256[:16]}... is not this site's {model_hash[:16]}...")
    return found


def describe(protocol: StudyProtocol, config: SiteConfig, model_hash: str | None) -> list[str]:
    """What the protocol asks of this site, in the operator's words."""
    policy, site = config.policy, config.name
    floor = policy.cell_floor(protocol.privacy.min_videos)
    named = "named" if site in protocol.sites else "NOT named"
    lines = [
        f"study        {protocol.study_id} v{protocol.version}: {protocol.title}",
        f"hash         {protocol.content_hash}",
        f"sites        {', '.join(protocol.sites)}  (this site {site!r}: {named})",
        f"model        {protocol.model_name} {protocol.model_sha256}"
        + ("  (matches this site's model)" if model_hash == protocol.model_sha256 else "  (NOT this site's model)"),
        f"tasks        {', '.join(f'{t.name} (a frame every {t.sample_every_s:g} s)' for t in protocol.tasks)}",
        f"rounds       {protocol.round_plan.rounds} ({protocol.round_plan.mode.value}), deadline "
        f"{protocol.round_plan.deadline_minutes:g} min; each (kind, round) is answered once",
        f"what leaves  per task and metric: {', '.join(METRIC_KEYS)}; cells under {floor} videos leave only the "
        f"suppressed flag (protocol asks {protocol.privacy.min_videos}, site policy {policy.min_videos})",
        f"privacy      outputs {protocol.privacy.outputs.value}, {protocol.privacy.bootstrap_replicates} bootstrap "
        "replicates",
    ]
    ft = protocol.finetune
    if ft is None:
        lines.append("fine-tuning  none (no adapter is accepted or sent)")
    else:
        role = "this site TRAINS" if site in ft.trainers else "this site only evaluates"
        dp = f"DP epsilon {ft.dp.target_epsilon:g}, delta {ft.dp.delta:g}" if ft.dp else "NO differential privacy"
        lines.append(
            f"fine-tuning  trainers {', '.join(ft.trainers)} ({role}); LoRA r={ft.lora.rank} on "
            f"{', '.join(ft.lora.target_modules)}; {dp}; a LoRA adapter ({ft.wire_dtype.value}) and num-examples "
            "leave each training round"
        )
    refused_tasks = [t.name for t in protocol.tasks if not policy.allows_task(t.name)]
    if refused_tasks:
        lines.append(f"policy       the site policy refuses tasks {refused_tasks}: such jobs will be refused")
    if protocol.round_plan.rounds > policy.max_rounds:
        lines.append(f"policy       more rounds than the site policy's {policy.max_rounds}: jobs will be refused")
    return lines


def review(home: SiteHome, target: str) -> tuple[StudyProtocol, list[str], list[str]]:
    """Parse the protocol safely; its description and the problems found."""
    config = home.config()
    protocol, _ = read_protocol_file(source_file(home, target))
    model_hash = site_model_hash(home, config)
    return protocol, describe(protocol, config, model_hash), problems(protocol, config.name, model_hash)


def approve_reviewed(home: SiteHome, target: str, *, force_reason: str | None = None, by: str = "") -> StudyProtocol:
    """Approve after the checks; a protocol with problems only with a reason, which the audit log keeps."""
    protocol, _, found = review(home, target)
    if found and not force_reason:
        raise ProtocolError("not approved: " + "; ".join(found) + ' (approve anyway only with --force --reason "...")')
    pinned = approve(home.approved_dir, source_file(home, target))
    AuditLog(home.audit_log).append(
        "protocol-approved",
        protocol_hash=pinned.content_hash,
        study=pinned.study_id,
        forced=bool(found),
        problems=[p[:200] for p in found],
        reason=(force_reason or "")[:500] or None,
        operator=by or None,
    )
    return pinned


def reject_pending(home: SiteHome, content_hash: str, *, note: str = "", by: str = "") -> None:
    """Drop a protocol request the hub sent (its jobs stay refused); the decision goes to the audit log."""
    path = pending_file(home.approved_dir, content_hash)
    if not path.is_file():
        raise ProtocolError(f"no pending protocol request {content_hash[:16]}...; see `site_node protocols pending`")
    path.unlink()
    AuditLog(home.audit_log).append(
        "protocol-rejected", protocol_hash=content_hash, note=note[:500] or None, operator=by or None
    )


def approve_new_snapshot(home: SiteHome, content_hash: str) -> tuple[str, int]:
    """Let an approved study run on the store as it is now; refused when it differs from the study's snapshot
    by fewer than the cell floor (the engine checks the same before each job)."""
    protocol = approved(home.approved_dir, content_hash)
    floor = home.config().policy.cell_floor(protocol.privacy.min_videos)
    current = store_snapshot(DataStore(home.store_dir))
    bound = JobLedger(home.jobs_dir / "_ledger.json").snapshot(protocol.study_id)
    diff = current.difference(bound) if bound is not None else 0
    if bound is not None and bound.digest != current.digest and diff < floor:
        raise ProtocolError(
            f"the store differs from study {protocol.study_id}'s snapshot by {diff} videos, fewer than {floor}: "
            "answering again would let the hub difference out single videos"
        )
    approve_snapshot(home.approved_dir, content_hash, current.digest)
    AuditLog(home.audit_log).append(
        "snapshot-approved", protocol_hash=content_hash, study=protocol.study_id, snapshot=current.digest
    )
    return current.digest, diff
