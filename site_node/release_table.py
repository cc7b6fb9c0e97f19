"""`site_node releases show`: the payload that would leave, as a table a data owner can read (`--json`: exact)."""

from __future__ import annotations

from typing import Any

from protocols.errors import SurgFedError
from protocols.records import parse_metric_record_name
from site_node.home import SiteHome
from site_node.jobs import JobStore

COLUMNS = ("task", "metric", "estimate", "95% CI", "videos", "suppressed")


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def metric_rows(payload: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per metric record, in the payload's own (sorted) order."""
    rows: list[tuple[str, ...]] = []
    for name in sorted(payload):
        parsed = parse_metric_record_name(name)
        if parsed is None:
            continue
        v = payload[name].get("values", {})
        suppressed = v.get("suppressed") == 1
        ci = "-" if suppressed or "ci_low" not in v else f"[{_number(v.get('ci_low'))}, {_number(v.get('ci_high'))}]"
        rows.append(
            (
                *parsed,
                "-" if suppressed else _number(v.get("estimate")),
                ci,
                "-" if suppressed else str(v.get("n_videos", "-")),
                "yes" if suppressed else "no",
            )
        )
    return rows


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [COLUMNS, *rows]]


def _extras(payload: dict[str, Any]) -> list[str]:
    """What else leaves besides metrics: the training record and the adapter's size."""
    lines = []
    train = payload.get("train", {}).get("values", {})
    if train:
        eps = f", epsilon {train['epsilon']:.3g}" if "epsilon" in train else ", no differential privacy"
        lines.append(f"training: {train.get('num-examples')} examples{eps}")
    adapter = payload.get("adapter", {}).get("values", {})
    if adapter:
        size = sum(len(v.get("b64", "")) * 3 // 4 for v in adapter.values())
        lines.append(f"LoRA adapter: {len(adapter)} tensors, {size / 1e6:.1f} MB")
    return lines


def render(home: SiteHome, job_id: str) -> str:
    job = JobStore(home.jobs_dir).get(job_id)
    if job is None or job.payload is None:
        raise SurgFedError(f"no finished job {job_id!r} with a payload at this site")
    payload = job.payload
    meta = payload.get("meta", {}).get("values", {})
    head = [
        f"job {job.job_id}: {job.kind.value}, study {job.study} round {job.round}, {job.state.value}",
        f"protocol {str(meta.get('protocol-hash', job.protocol_hash))[:16]}..., "
        f"software {meta.get('software-version', '?')}",
    ]
    rows = metric_rows(payload)
    body = _table(rows) if rows else ["(no metrics)"]
    tail = f"{len(payload)} records leave; the exact payload: site_node releases show {job.job_id} --json"
    return "\n".join([*head, "", *body, *_extras(payload), "", tail])
