"""`site_node releases show`: a readable table of what would leave; `--json` the exact records."""

from __future__ import annotations

import json
from pathlib import Path

from protocols.contract import JobKind, JobState
from protocols.records import job_reply, metric_record, metric_record_name, result_meta, train_record
from site_node.cli import main
from site_node.home import SiteHome, init_home
from site_node.jobs import Job, JobStore


def _home_with_result(tmp_path: Path) -> tuple[SiteHome, dict[str, object]]:
    home = init_home(tmp_path / "site", "site-a", release="manual")
    payload = {
        **job_reply("job-1", JobState.DONE),
        **result_meta("0.1.0", "ab" * 32),
        metric_record_name("phase", "accuracy"): metric_record(
            {"estimate": 0.6125, "ci_low": 0.5, "ci_high": 0.71, "n_videos": 6, "n_frames": 144, "suppressed": 0}
        ),
        metric_record_name("phase", "f1"): metric_record({"suppressed": 1}),
        **train_record(120, 2.5),
    }
    JobStore(home.jobs_dir).save(
        Job("job-1", JobKind.EVALUATE, "demo-phase", 1, "ab" * 32, state=JobState.AWAITING_APPROVAL, payload=payload)
    )
    return home, payload


def test_table_and_exact_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    home, payload = _home_with_result(tmp_path)
    assert main(["releases", "show", "job-1", "--home", str(home.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "job job-1: evaluate, study demo-phase round 1, awaiting_approval"
    rows = [line.split() for line in lines if line.startswith(("task", "phase"))]
    assert rows == [
        ["task", "metric", "estimate", "95%", "CI", "videos", "suppressed"],
        ["phase", "accuracy", "0.613", "[0.500,", "0.710]", "6", "no"],
        ["phase", "f1", "-", "-", "-", "yes"],
    ]
    assert "training: 120 examples, epsilon 2.5" in lines
    assert lines[-1] == f"{len(payload)} records leave; the exact payload: site_node releases show job-1 --json"
    assert main(["releases", "show", "job-1", "--json", "--home", str(home.root)]) == 0
    assert json.loads(capsys.readouterr().out) == payload


def test_unknown_job_is_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    home, _ = _home_with_result(tmp_path)
    assert main(["releases", "show", "job-9", "--home", str(home.root)]) != 0
    err = capsys.readouterr().err
    assert err.strip() == "site_node: error: no finished job 'job-9' with a payload at this site"
