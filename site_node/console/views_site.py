"""What the Data, De-identification and Policy pages show: the store, its de-identification runs, the policy."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from protocols.errors import SurgFedError
from site_node.audit import AuditLog
from site_node.deid.batch import REPORT_NAME
from site_node.home import SiteHome
from site_node.job_ledger import store_snapshot
from site_node.store import DataStore


def data_view(home: SiteHome) -> dict[str, Any]:
    """Datasets by format with their videos and label kinds: pseudonymous ids only (the store holds no others)."""
    store = DataStore(home.store_dir)
    datasets: list[dict[str, Any]] = []
    for d in store.datasets():
        kinds = Counter(kind for v in d.videos for kind in v.labels)
        datasets.append(
            {
                "dataset_id": d.dataset_id,
                "format": d.format,
                "videos": [
                    {"video_id": v.video_id, "frames": v.n_frames, "fps": v.fps, "labels": sorted(v.labels)}
                    for v in d.videos
                ],
                "frames": sum(v.n_frames for v in d.videos),
                "label_kinds": dict(sorted(kinds.items())),
                "skipped": dict(d.skipped),
            }
        )
    formats = Counter(d["format"] for d in datasets)
    totals = Counter({k: n for d in datasets for k, n in d["label_kinds"].items()})
    return {
        "datasets": datasets,
        "formats": dict(sorted(formats.items())),
        "label_kinds": dict(sorted(totals.items())),
        "videos": sum(len(d["videos"]) for d in datasets),
        "snapshot": store_snapshot(store).digest,
    }


def deid_view(home: SiteHome) -> dict[str, Any]:
    """Each dataset's last de-identification report (counts, reasons, actions) and every ingest run audited."""
    reports = []
    for d in DataStore(home.store_dir).datasets():
        path = home.store_dir / "data" / d.dataset_id / REPORT_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            reports.append({"dataset_id": d.dataset_id, "format": d.format, "missing": True})
            continue
        summary = raw.get("summary", {})
        quarantined = [
            {"pseudo_id": e.get("pseudo_id"), "kind": e.get("kind"), "reason": e.get("reason")}
            for e in raw.get("entries", [])
            if e.get("status") != "ok"
        ]
        reports.append(
            {
                "dataset_id": d.dataset_id,
                "format": d.format,
                "missing": False,
                "profile": raw.get("profile"),
                "out_of_body": raw.get("out_of_body_detector"),
                "files": summary.get("files", 0),
                "ok": summary.get("ok", 0),
                "quarantined": summary.get("quarantined", 0),
                "actions": summary.get("actions", {}),
                "quarantined_files": quarantined,
                "skipped": dict(d.skipped),
            }
        )
    try:
        runs = [e for e in AuditLog(home.audit_log).entries() if e.get("event") == "ingest"]
    except (OSError, ValueError, SurgFedError):
        runs = []
    return {"reports": reports, "runs": list(reversed(runs))}


def policy_view(home: SiteHome) -> dict[str, Any]:
    """The [policy] in force (read-only here: it changes in site.toml, and the next start logs the change)."""
    cfg = home.config()
    shown = {
        k: (str(v).lower() if isinstance(v, bool) else list(v) if isinstance(v, tuple) else v)
        for k, v in cfg.policy.as_dict().items()
    }
    return {
        "policy": shown,
        "epsilon_budget": cfg.epsilon_budget,
        "release_mode": cfg.release.value,
        "config_file": str(home.config_file),
    }
