"""The release gate: builds what may leave, suppresses small cells, enforces the contract, audits every reply."""

from __future__ import annotations

import math
from typing import Any

from protocols import __version__
from protocols.contract import GRPO_STAT_KEYS, GRPO_WINDOW_KEYS, JobState, Op, WireRecords, check_records
from protocols.errors import ContractError
from protocols.records import adapter_records, job_reply, metric_record, metric_record_name, result_meta, train_record
from protocols.study import StudyProtocol
from site_node.audit import AuditLog, payload_digest
from site_node.metrics.bootstrap import Estimate


def _metric_values(est: Estimate, min_videos: int) -> dict[str, Any]:
    """The contract numbers, or only the flag when the cell is small or the metric undefined (nothing else leaves)."""
    if est.n_videos < min_videos or not math.isfinite(est.estimate):
        return {"suppressed": 1}
    values: dict[str, Any] = {
        "estimate": float(est.estimate),
        "n_videos": int(est.n_videos),
        "n_frames": int(est.n_frames),
        "suppressed": 0,
    }
    for key in ("ci_low", "ci_high", "parse_fail_rate", "se_pooling", "undefined_share"):
        value = float(getattr(est, key))
        if math.isfinite(value):
            values[key] = value
    values["pooling_scale"] = est.pooling_scale.code
    return values


def evaluation_payload(
    job_id: str, protocol: StudyProtocol, estimates: dict[str, dict[str, Estimate]], *, min_videos: int | None = None
) -> WireRecords:
    """The fetch reply of a finished evaluation: per task and metric its numbers, plus versions and hash.
    `min_videos`: the cell floor in force (the site policy's and the protocol's, the stricter)."""
    floor = max(min_videos or 0, protocol.privacy.min_videos)
    records = {**job_reply(job_id, JobState.DONE), **result_meta(__version__, protocol.content_hash)}
    for task, metrics in estimates.items():
        for metric, est in metrics.items():
            records[metric_record_name(task, metric)] = metric_record(_metric_values(est, floor))
    check_records(Op.FETCH, records)
    return records


def train_payload(
    job_id: str,
    protocol: StudyProtocol,
    arrays: dict[str, Any],
    meta: dict[str, str],
    num_examples: int,
    epsilon: float | None,
    extra: WireRecords | None = None,
) -> WireRecords:
    """The fetch reply of a finished training round: the adapter, its metadata, the FedAvg weight (and epsilon);
    `extra`: a GRPO round's reward statistics (grpo_record)."""
    records = {
        **job_reply(job_id, JobState.DONE),
        **result_meta(__version__, protocol.content_hash),
        **adapter_records(arrays, meta),
        **train_record(num_examples, epsilon),
        **(extra or {}),
    }
    check_records(Op.FETCH, records)
    return records


def grpo_record(stats: dict[str, float], n_videos: int, min_videos: int) -> WireRecords:
    """A GRPO round's aggregate reward statistics, or only the flag when fewer videos than the cell floor
    were sampled (the statistics would then describe a handful of cases). A step window's mean (`reward-first`,
    `reward-last`) is left out on its own when that window sampled fewer videos than the floor."""
    if n_videos < min_videos:
        return {"grpo": metric_record({"suppressed": 1})}
    small = {k for k in GRPO_WINDOW_KEYS if stats.get(f"{k}-videos", 0.0) < min_videos}
    values: dict[str, Any] = {
        k: float(stats[k]) for k in GRPO_STAT_KEYS if k in stats and math.isfinite(stats[k]) and k not in small
    }
    return {"grpo": metric_record({**values, "suppressed": 0})}


def _summary(records: WireRecords) -> dict[str, Any]:
    metrics = [n for n in records if n.startswith("metric.")]
    suppressed = [n for n in metrics if records[n]["values"].get("suppressed") == 1]
    summary = {"records": len(records), "metrics": len(metrics), "suppressed": len(suppressed)}
    if "adapter" in records:
        summary["adapter_values"] = sum(len(v["b64"]) * 3 // 4 for v in records["adapter"]["values"].values())
    return summary


class ReleaseGate:
    """Every reply passes here; what the contract does not allow is refused and logged, never sent."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def release(self, op: Op, records: WireRecords, *, job_id: str | None = None) -> WireRecords:
        try:
            check_records(op, records)
        except ContractError as exc:
            self.audit.append("refused-outgoing", op=op.value, job_id=job_id, reason=str(exc)[:500])
            raise
        entry = self.audit.append(
            "released", op=op.value, job_id=job_id, digest=payload_digest(records), summary=_summary(records)
        )
        # The anchor names the entry that logged this reply: once the hub holds it, the log cannot shrink past it.
        return {**records, "audit": {"kind": "config", "values": {"seq": int(entry["seq"]), "head": entry["hash"]}}}
