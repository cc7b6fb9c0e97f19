"""The curious hub against the real site engine: fixed status vocabulary, each question once, snapshots, adapters."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from protocols.arrays import to_wire
from protocols.contract import JobState
from protocols.model_ref import manifest_hash
from protocols.records import adapter_digest
from protocols.study import load_protocol
from site_node.approvals import approve
from site_node.engine import SiteEngine
from site_node.home import SiteHome, init_home
from site_node.ingest import ingest
from site_node.jobs import JobStore
from site_node.synthetic.videos import synthesize_site

PROTOCOL: dict[str, Any] = {
    "study": {"id": "disclosure", "version": "1"},
    "sites": ["a"],
    "model": {"manifest_sha256": "0" * 64},
    "tasks": ["phase"],
    "round_plan": {"rounds": 2},
    "privacy": {"min_videos": 1},
}


def _protocol(tmp_path: Path, home: SiteHome, data: dict[str, Any], name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    approve(home.approved_dir, path)
    return load_protocol(path).content_hash


def _request(engine: SiteEngine, op: str, values: dict[str, Any], extra: dict | None = None) -> dict[str, Any]:
    records = {"job": {"kind": "config", "values": values}, **(extra or {})}
    return engine.handle({"token": engine.home.token(), "op": op, "records": records})


def _submit(engine: SiteEngine, phash: str, job_id: str, **over: Any) -> dict[str, Any]:
    values = {
        "job-id": job_id,
        "kind": "evaluate",
        "study": "disclosure",
        "round": 0,
        "protocol-hash": phash,
        "contract-version": 2,
    }
    extra = over.pop("extra", None)
    reply = _request(engine, "submit", {**values, **over}, extra)
    assert reply["ok"], reply
    return reply["records"]["job"]["values"]


def _status(engine: SiteEngine, job_id: str) -> dict[str, Any]:
    reply = _request(engine, "status", {"job-id": job_id})
    assert reply["ok"], reply
    return reply["records"]["job"]["values"]


def _assert_no_side_channel(values: dict[str, Any]) -> None:
    """Nothing but the id, a state word, a 0.1-step progress and a reason code; no digits, no paths."""
    assert set(values) <= {"job-id", "state", "progress", "reason"}, values
    assert values["progress"] in {round(i / 10, 1) for i in range(11)}
    for key in ("job-id", "state", "reason"):
        text = str(values.get(key, ""))
        assert not re.search(r"\d", text) and "/" not in text, (key, text)


@pytest.fixture
def site(tmp_path: Path) -> SiteHome:
    return SiteHome(init_home(tmp_path / "site", "a").root)


@pytest.fixture
def stored_site(tmp_path: Path, synthetic_site: Path) -> SiteHome:
    home = SiteHome(init_home(tmp_path / "site", "a").root)
    ingest(home, synthetic_site / "cholec80", "cholec80", out_of_body="none", profile="demo")
    return home


def test_status_of_refused_failed_and_running_jobs_carries_codes_only(tmp_path: Path, site: SiteHome) -> None:
    engine = SiteEngine(site, load=False)  # no model: an approved job fails
    refused = _submit(engine, "f" * 64, "refusedjob")
    assert refused["state"] == "refused" and refused["reason"] == "protocol-not-approved"
    _assert_no_side_channel(_status(engine, "refusedjob"))

    phash = _protocol(tmp_path, site, PROTOCOL)
    assert _submit(engine, phash, "failingjob")["state"] == "queued"
    engine.start()
    deadline = time.time() + 30
    while (status := _status(engine, "failingjob"))["state"] != "failed" and time.time() < deadline:
        time.sleep(0.1)
    engine.stop()
    assert status["reason"] == "model-mismatch"
    _assert_no_side_channel(status)
    assert "model" in engine.jobs.get("failingjob").detail  # the full text stays in the job folder

    # A running job's counts and paths stay in its file; only a rounded fraction leaves.
    engine.jobs.update("failingjob", state=JobState.RUNNING, reason="", progress=7 / 23, detail=f"{tmp_path} 7/23")
    running = _status(engine, "failingjob")
    assert running["progress"] == 0.3 and running["state"] == "running"
    _assert_no_side_channel(running)
    assert str(tmp_path) not in site.audit_log.read_text() or "7/23" not in site.audit_log.read_text()


def test_awaiting_approval_status_with_the_tiny_model(
    tmp_path: Path, synthetic_site: Path, tiny_model_dir: Path
) -> None:
    home = SiteHome(init_home(tmp_path / "site", "a", model_dir=tiny_model_dir, release="manual").root)
    ingest(home, synthetic_site / "cholec80", "cholec80", out_of_body="none", profile="demo")
    data = {**PROTOCOL, "model": {"manifest_sha256": manifest_hash(tiny_model_dir)}}
    phash = _protocol(tmp_path, home, data)
    engine = SiteEngine(home)
    engine.start()
    _submit(engine, phash, "manualjob")
    seen = []
    deadline = time.time() + 300
    while (status := _status(engine, "manualjob"))["state"] not in ("awaiting_approval", "failed"):
        seen.append(status)
        assert time.time() < deadline
        time.sleep(0.05)
    engine.stop()
    assert status["state"] == "awaiting_approval", engine.jobs.get("manualjob").detail
    for values in [*seen, status]:
        _assert_no_side_channel(values)
    assert "frames" in engine.jobs.get("manualjob").detail  # counts are kept locally


@pytest.mark.parametrize(
    ("case", "over", "reason"),
    [
        ("same question, new job id", {}, "already-answered"),
        ("round outside the plan", {"round": 99999}, "protocol-mismatch"),
        ("wrong study id", {"study": "whatever"}, "protocol-mismatch"),
        ("training in an evaluation study", {"kind": "train", "round": 1}, "protocol-mismatch"),
    ],
)
def test_each_question_once_within_the_plan(
    tmp_path: Path, site: SiteHome, case: str, over: dict[str, Any], reason: str
) -> None:
    engine = SiteEngine(site, load=False)
    phash = _protocol(tmp_path, site, PROTOCOL)
    assert _submit(engine, phash, "first")["state"] == "queued"
    assert _submit(engine, phash, "first")["state"] == "queued"  # the same job again: a restarted hub
    again = _submit(engine, phash, "second", **over)
    assert (again["state"], again.get("reason")) == ("refused", reason), case
    assert _submit(engine, phash, "roundone", round=1)["state"] == "queued"  # the plan's next round is fine


def test_failed_job_frees_its_question(tmp_path: Path, site: SiteHome) -> None:
    engine = SiteEngine(site, load=False)
    phash = _protocol(tmp_path, site, PROTOCOL)
    _submit(engine, phash, "first")
    engine.jobs.update("first", state=JobState.FAILED, reason="internal-error")
    assert _submit(engine, phash, "retry")["state"] == "queued"


def test_job_after_one_more_video_is_refused(tmp_path: Path, stored_site: SiteHome) -> None:
    from site_node.cli import main

    home = stored_site
    engine = SiteEngine(home, load=False)
    phash = _protocol(tmp_path, home, PROTOCOL)
    assert _submit(engine, phash, "before")["state"] == "queued"
    synthesize_site(tmp_path / "one-more", "a", 1, 0.0, 11, seconds=4.0)
    ingest(home, tmp_path / "one-more", "cholec80", out_of_body="none", profile="demo")
    after = _submit(engine, phash, "after", round=1)
    assert (after["state"], after["reason"]) == ("refused", "snapshot-changed")
    # Re-approval for the new snapshot is refused too: one video apart is a differencing attack.
    assert main(["protocols", "approve", phash, "--snapshot", "--home", str(home.root)]) != 0
    assert _submit(engine, phash, "after2", round=1)["reason"] == "snapshot-changed"
    accepted = [e for e in engine.audit.entries() if e["event"] == "accepted"]
    assert accepted and len(accepted[0]["snapshot"]) == 64  # the snapshot is in the audit log ...
    assert engine.jobs.get("before").snapshot == accepted[0]["snapshot"]  # ... and in the job


def test_snapshot_reapproval_with_enough_new_videos(tmp_path: Path, stored_site: SiteHome) -> None:
    from site_node.cli import main

    home = stored_site
    text = home.config_file.read_text()
    assert "min_videos = 5" in text
    home.config_file.write_text(text.replace("min_videos = 5", "min_videos = 2"))  # the site's cell floor
    engine = SiteEngine(home, load=False)
    phash = _protocol(tmp_path, home, PROTOCOL)
    _submit(engine, phash, "before")
    synthesize_site(tmp_path / "more", "a", 2, 0.0, 12, seconds=4.0)  # 2 new videos: as many as the floor
    ingest(home, tmp_path / "more", "cholec80", out_of_body="none", profile="demo")
    assert _submit(engine, phash, "after", round=1)["reason"] == "snapshot-changed"
    assert main(["protocols", "approve", phash, "--snapshot", "--home", str(home.root)]) == 0
    assert _submit(engine, phash, "after2", round=1)["state"] == "queued"


def _adapter(value: float) -> dict[str, Any]:
    arrays = {"adapter": to_wire(np.full(4, value, dtype=np.float32))}
    meta = {"encoding": "flat", "wire-dtype": "float32", "tensors": "[]"}
    return {"adapter": {"kind": "array", "values": arrays}, "adapter-meta": {"kind": "config", "values": meta}}


def test_adapters_only_for_fine_tuning_and_one_per_round(tmp_path: Path, site: SiteHome) -> None:
    engine = SiteEngine(site, load=False)
    phash = _protocol(tmp_path, site, PROTOCOL)
    refused = _submit(engine, phash, "withadapter", extra=_adapter(1.0))
    assert (refused["state"], refused["reason"]) == ("refused", "adapter-mismatch")
    assert not (site.jobs_dir / "withadapter").exists() or not any((site.jobs_dir / "withadapter").iterdir())

    ft = {
        **PROTOCOL,
        "study": {"id": "disclosure", "version": "2"},
        "sites": ["a", "b"],
        "round_plan": {"mode": "finetune", "rounds": 2, "finetune": {"trainers": ["b"], "local_steps": 1}},
    }
    fhash = _protocol(tmp_path, site, ft, "ft.yaml")
    assert _submit(engine, fhash, "evalzero")["state"] == "queued"  # round 0: the baseline, no adapter
    a1, b1 = _adapter(1.0), _adapter(2.0)
    assert _submit(engine, fhash, "evalone", round=1, extra=a1)["state"] == "queued"
    wrong_hash = _submit(engine, fhash, "evaltwo", round=2, extra=a1, **{"adapter-sha256": "0" * 64})
    assert wrong_hash["reason"] == "adapter-mismatch"
    # A trainer's round-2 job must start from round 1's adapter, the one this site evaluated.
    other = SiteEngine(site, load=False)
    assert other.ledger.snapshot("disclosure") is not None
    train = _submit(
        engine, fhash, "traintwo", kind="train", round=2, extra=b1, **{"adapter-sha256": adapter_digest(b1)}
    )
    assert (train["state"], train["reason"]) == ("refused", "adapter-mismatch")


@pytest.mark.parametrize("job_id", ["x.json", "../escape", "", "a" * 200, "with space"])
def test_job_ids_outside_the_alphabet_are_refused(site: SiteHome, job_id: str) -> None:
    engine = SiteEngine(site, load=False)
    reply = _request(
        engine,
        "submit",
        {
            "job-id": job_id,
            "kind": "evaluate",
            "study": "s",
            "round": 0,
            "protocol-hash": "f" * 64,
            "contract-version": 2,
        },
    )
    assert reply == {"ok": False, "error": "bad-request"}
    assert not any(p.name.startswith("x.") for p in site.jobs_dir.iterdir())
    SiteEngine(site, load=False)  # a restart still reads the jobs folder


def test_job_storage_quota_and_prune(tmp_path: Path, site: SiteHome) -> None:
    from site_node.cli import main

    engine = SiteEngine(site, load=False)
    ft = {
        **PROTOCOL,
        "sites": ["a", "b"],
        "round_plan": {"mode": "finetune", "rounds": 2, "finetune": {"trainers": ["b"], "local_steps": 1}},
    }
    fhash = _protocol(tmp_path, site, ft)
    assert _submit(engine, fhash, "baseline")["state"] == "queued"
    engine.jobs.update("baseline", state=JobState.DONE)
    engine.jobs = JobStore(site.jobs_dir, quota_bytes=engine.jobs.used_bytes() + 10)
    full = _submit(engine, fhash, "big", round=1, extra=_adapter(1.0))
    assert (full["state"], full["reason"]) == ("refused", "storage-full")
    assert main(["jobs", "prune", "--older-than-days", "0", "--home", str(site.root)]) == 0
    assert JobStore(site.jobs_dir).all() == []
    # Pruning frees space, never the answered questions.
    assert "baseline" in json.loads((site.jobs_dir / "_ledger.json").read_text())["questions"].values()
    assert _submit(engine, fhash, "baselineagain")["reason"] == "already-answered"
