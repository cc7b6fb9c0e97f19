"""What the pages and the API show: studies, the rounds-by-sites grid of job states, sites; read from the store."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from hub.home import HubHome
from hub.studies import study_protocol
from protocols.errors import SurgFedError
from protocols.states import LaunchState

# Badge colour groups for the site job states the coordinator records (hub/coordinator.py, protocols JobState).
STATE_GROUP = {
    "pending": "wait",
    "queued": "wait",
    "running": "busy",
    "awaiting_approval": "busy",
    "done": "busy",
    "stored": "ok",
    "failed": "bad",
    "refused": "bad",
    "rejected": "bad",
    "error": "bad",
    "absent": "bad",
}


def study_state(launch: dict[str, Any] | None) -> str:
    return "registered" if launch is None else str(launch["state"])


def studies(home: HubHome) -> list[dict[str, Any]]:
    store = home.store()
    out = []
    for study_id in sorted(store.study_ids()):
        study = store.study(study_id)
        launches = store.launches_of(study_id)
        latest = launches[0] if launches else None
        out.append(
            {
                "study_id": study_id,
                "title": study["title"],
                "version": study["version"],
                "protocol_hash": study["protocol_hash"],
                "state": study_state(latest),
                "launch_id": latest["launch_id"] if latest else None,
                "launches": len(launches),
                "registered_at": study["created_at"],
            }
        )
    return out


def grid(home: HubHome, study_id: str) -> dict[str, Any]:
    """The latest launch as rounds x sites: the protocol's plan, filled with the job states the store holds."""
    store = home.store()
    study = store.study(study_id)
    protocol = study_protocol(study)
    launches = store.launches_of(study_id)
    latest = launches[0] if launches else None
    jobs = store.jobs(latest["launch_id"]) if latest else []
    sites = list(protocol.sites) if protocol else []
    rounds = list(protocol.round_numbers) if protocol else []
    for job in jobs:
        sites += [] if job["center"] in sites else [job["center"]]
        rounds += [] if job["round"] in rounds else [job["round"]]
    by_cell: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for job in jobs:
        by_cell.setdefault((job["round"], job["center"]), []).append(
            {
                "kind": job["kind"],
                "state": job["state"],
                "group": STATE_GROUP.get(job["state"], "busy"),
                "detail": job["detail"],
                "updated_at": job["updated_at"],
            }
        )
    cells = [{"round": r, "site": s, "jobs": by_cell.get((r, s), [])} for r in sorted(rounds) for s in sites]
    state = study_state(latest)
    return {
        "study_id": study_id,
        "state": state,
        "final": state not in ("registered", *(s.value for s in LaunchState if s.open)),
        "launch_id": latest["launch_id"] if latest else None,
        "detail": latest["detail"] if latest else None,
        "rounds": sorted(rounds),
        "sites": sites,
        "cells": cells,
    }


def sites(home: HubHome) -> list[dict[str, Any]]:
    """Registered sites with the newest job state each one reported, across studies."""
    store = home.store()
    latest: dict[str, dict[str, Any]] = {}
    for study_id in store.study_ids():
        for job in store.jobs_for_study(study_id):
            seen = latest.get(job["center"])
            if seen is None or job["updated_at"] > seen["updated_at"]:
                latest[job["center"]] = job
    out = []
    for site in store.list_sites():
        last = latest.get(site["name"])
        out.append(
            {
                "name": site["name"],
                "state": "revoked" if site["revoked_at"] else "registered",
                "node_id": site["node_id"],
                "added_at": site["added_at"],
                "last_job_state": last["state"] if last else None,
                "last_job_group": STATE_GROUP.get(last["state"], "busy") if last else "none",
                "last_job_at": last["updated_at"] if last else None,
                "software_version": last["software_version"] if last else None,
            }
        )
    return out


def headline_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-center rows of each task's headline metric (the page's table; the zip has every metric)."""
    from reports import task_info

    headline: dict[str, str | None] = {}
    for task in {str(r["task"]) for r in rows}:
        try:
            headline[task] = task_info(task).headline
        except SurgFedError:  # a task without a built-in definition: show all its metrics
            headline[task] = None
    return [r for r in rows if headline[str(r["task"])] in (None, r["metric"])]


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-safe dicts: NaN and <NA> become null, numpy numbers plain Python."""
    rows = []
    for record in frame.astype(object).to_dict(orient="records"):
        rows.append({str(k): _plain(v) for k, v in record.items()})
    return rows


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return value
