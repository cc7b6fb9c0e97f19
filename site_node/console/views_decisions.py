"""What the Protocols, Releases and Audit pages show: requests to decide, exact payloads, the log and the ledger."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

from protocols.contract import METRIC_KEYS, JobState
from protocols.errors import SurgFedError
from protocols.study import StudyProtocol
from protocols.tasks import load_task
from site_node.approvals import list_approved, list_pending
from site_node.audit import AuditLog, load_anchors, payload_digest, verify, verify_anchored
from site_node.home import SiteHome
from site_node.jobs import JobStore
from site_node.protocol_review import review
from site_node.store import DataStore

DECISIONS = ("release-approved", "release-rejected", "protocol-approved", "protocol-rejected")


def released_fields(protocol: StudyProtocol) -> list[dict[str, str]]:
    """Every record and field one round of this protocol sends, as the message contract allows them."""
    rows = [
        {"record": "job", "fields": "job-id, state, progress (steps of 0.1), reason (a code from a fixed list)"},
        {"record": "meta", "fields": "software-version, protocol-hash, contract-version"},
    ]
    for plan in protocol.tasks:
        try:
            metrics = [m.name for m in load_task(plan.name).metrics]
        except SurgFedError:
            metrics = ["(the task's metrics)"]
        rows.append(
            {
                "record": f"metric.{plan.name}.{{{', '.join(metrics)}}}",
                "fields": ", ".join(METRIC_KEYS) + "; a cell under the floor sends only suppressed = 1",
            }
        )
    if protocol.finetune is not None:
        rows += [
            {"record": "adapter", "fields": "the LoRA adapter tensors (never base weights) - training rounds only"},
            {"record": "adapter-meta", "fields": "encoding, wire-dtype, tensors (names and shapes)"},
            {"record": "train", "fields": "num-examples, epsilon (under DP)"},
        ]
    rows.append({"record": "audit", "fields": "seq, head: this site's audit-log anchor for the reply"})
    return rows


def _task_data(home: SiteHome, protocol: StudyProtocol) -> list[dict[str, Any]]:
    from site_node.task_runtime import runtime_for

    store = DataStore(home.store_dir)
    out = []
    for plan in protocol.tasks:
        try:
            kind = runtime_for(plan.name).label_kind.value
            videos: int | None = len(store.videos_with(kind))
        except SurgFedError:
            kind, videos = "(re-reads the other tasks' answers)", None
        out.append({"task": plan.name, "every_s": plan.sample_every_s, "labels": kind, "videos": videos})
    return out


def protocol_detail(home: SiteHome, target: str) -> dict[str, Any]:
    """One protocol as the operator reviews it: the CLI's description, the data it reads, the exact fields."""
    protocol, lines, problems = review(home, target)
    described = [re.split(r"\s{2,}", line, maxsplit=1) + [""] for line in lines]  # "label   text", as the CLI prints
    return {
        "hash": protocol.content_hash,
        "study": protocol.study_id,
        "version": protocol.version,
        "title": protocol.title,
        "lines": [{"label": parts[0], "text": parts[1].strip()} for parts in described],
        "problems": problems,
        "tasks": _task_data(home, protocol),
        "fields": released_fields(protocol),
        "rounds": protocol.round_plan.rounds,
        "mode": protocol.round_plan.mode.value,
    }


def protocols_view(home: SiteHome) -> dict[str, Any]:
    pending = []
    for digest, size, received in list_pending(home.approved_dir):
        try:
            detail: dict[str, Any] | None = protocol_detail(home, digest)
            error = None
        except SurgFedError as exc:
            detail, error = None, str(exc)
        pending.append({"hash": digest, "bytes": size, "received": _when(received), "detail": detail, "error": error})
    approved = []
    for digest, protocol in list_approved(home.approved_dir):
        if isinstance(protocol, str):
            approved.append({"hash": digest, "study": None, "error": protocol})
        else:
            approved.append({"hash": digest, "study": f"{protocol.study_id} v{protocol.version}", "error": None})
    return {"pending": pending, "approved": approved}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _fields(values: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": json.dumps(v)} for k, v in sorted(values.items())]


def releases_view(home: SiteHome) -> dict[str, Any]:
    """Jobs awaiting release with every record and field exactly as it would be sent, and the released history."""
    pending = []
    for job in JobStore(home.jobs_dir).all():
        if job.state is not JobState.AWAITING_APPROVAL or job.payload is None:
            continue
        records = [
            {"name": name, "kind": rec.get("kind"), "fields": _fields(rec.get("values", {}))}
            for name, rec in sorted(job.payload.items())
        ]
        pending.append(
            {
                "job_id": job.job_id,
                "study": job.study,
                "round": job.round,
                "kind": job.kind.value,
                "finished": _when(job.updated),
                "records": records,
                "digest": payload_digest(job.payload),
                "json": json.dumps(job.payload, indent=2, sort_keys=True),
            }
        )
    history = [
        e
        for e in _entries(home)
        if (e.get("event") == "released" and e.get("op") == "fetch") or e.get("event") in DECISIONS[:2]
    ]
    return {"pending": pending, "history": list(reversed(history))}


def _entries(home: SiteHome) -> list[dict[str, Any]]:
    try:
        return AuditLog(home.audit_log).entries()
    except (OSError, ValueError, SurgFedError):
        return []


def audit_view(home: SiteHome, event: str = "", text: str = "", limit: int = 500) -> dict[str, Any]:
    """The log, newest first, filtered by event and by text anywhere in an entry; the chain verified."""
    entries = _entries(home)
    events = sorted({str(e.get("event")) for e in entries})
    shown = [
        {
            "seq": e.get("seq"),
            "time": e.get("time"),
            "event": e.get("event"),
            "fields": json.dumps(
                {k: v for k, v in e.items() if k not in ("seq", "time", "event", "prev", "hash")}, sort_keys=True
            ),
        }
        for e in reversed(entries)
        if (not event or e.get("event") == event) and (not text or text.lower() in json.dumps(e).lower())
    ]
    return {"entries": shown[:limit], "total": len(shown), "events": events, "verify": verify_result(home.audit_log)}


def verify_result(path: Path, anchors_file: Path | None = None) -> dict[str, Any]:
    """`site_node audit verify [--anchors]` as a result the page shows: ok and the line the CLI prints."""
    try:
        if anchors_file is None:
            return {"ok": True, "text": f"{verify(path)} entries, chain intact"}
        anchors = load_anchors(anchors_file)
        n = verify_anchored(path, anchors)
        return {"ok": True, "text": f"{n} entries, chain intact, all {len(anchors)} hub anchors match"}
    except (OSError, SurgFedError) as exc:
        return {"ok": False, "text": str(exc)}


def ledger_view(home: SiteHome) -> dict[str, Any]:
    """Epsilon spent per study and site-wide (the worst video) against the policy's cap; verified first."""
    from site_node.finetune_jobs import LEDGER_FILE
    from site_node.training.ledger import SiteLedger, unit_epsilons

    cap = home.config().policy.epsilon_cap
    try:
        rounds = SiteLedger(home.root / LEDGER_FILE, AuditLog(home.audit_log)).rounds()
    except SurgFedError as exc:
        return {"ok": False, "error": str(exc), "studies": [], "site_wide": None, "cap": cap, "rounds": 0}
    units = sorted({u for r in rounds for u in r.units})
    studies = []
    for study in sorted({r.study for r in rounds}):
        mine = [r for r in rounds if r.study == study]
        spent = max(unit_epsilons(mine, sorted({u for r in mine for u in r.units}), 1e-5).values(), default=0.0)
        studies.append({"study": study, "rounds": len(mine), "epsilon": _eps(spent)})
    worst = max(unit_epsilons(rounds, units, 1e-5).values(), default=0.0)
    return {
        "ok": True,
        "error": None,
        "studies": studies,
        "site_wide": _eps(worst),
        "cap": cap,
        "over": worst > cap,
        "rounds": len(rounds),
        "videos": len(units),
    }


def _eps(value: float) -> str:
    return "unbounded (trained without DP)" if math.isinf(value) else f"{value:.3f}"
