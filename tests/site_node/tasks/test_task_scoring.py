"""`site_node score`: a predictions file scored with the engine's metric code; bad lines reported, never guessed."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from protocols.errors import DataError
from site_node.cli import home_option
from site_node.commands_eval import register
from site_node.scoring import LabelSpec, load_label_sets, read_predictions, score_records
from site_node.task_runtime import runtime_for

METRIC_KEYS = {"estimate", "ci_low", "ci_high", "sd", "n_videos", "n_frames", "parse_fail_rate"}


def _site_node(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="site_node")
    register(parser.add_subparsers(dest="command", required=True), home_option())
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def _perfect_lines(data: Path) -> list[dict]:
    labels, _ = load_label_sets(runtime_for("triplet"), [LabelSpec(data, "cholect50", "t50")])
    return [
        {"video": v.video, "frame": f, "answer": f"<think>L1.</think><answer>{'; '.join(sorted(s)) or 'none'}</answer>"}
        for v in labels
        for f, s in sorted(v.labels.labels.items())
    ]


def test_score_reports_bad_lines_and_scores_the_rest(synthetic_site: Path, tmp_path: Path) -> None:
    lines = _perfect_lines(synthetic_site / "cholect50")
    first = lines[0]
    bad = [
        "not json",
        json.dumps({"video": "VID01", "frame": -1, "answer": "x"}),
        json.dumps({**first, "frame": 99999}),
        json.dumps({**first, "video": "VID77"}),
        json.dumps(first),
        json.dumps({**first, "task": "phase"}),
    ]  # another task's line: not this task's business
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join([json.dumps(x) for x in lines] + bad) + "\n")
    out = tmp_path / "METRICS.json"
    assert (
        _site_node(
            "score",
            "--task",
            "triplet",
            "--labels",
            str(synthetic_site / "cholect50"),
            "--format",
            "cholect50",
            "--predictions",
            str(pred),
            "--out",
            str(out),
            "--seed",
            "5",
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["metrics"]["exact_match"]["estimate"] == 1.0 and result["metrics"]["f1"]["estimate"] == 1.0
    assert result["metrics"]["ap_ivt_hard"]["estimate"] == 1.0 and "ap_ivt" not in result["metrics"]
    assert result["ap_computed_on"] == "hard predictions" and result["parse_fail_rate"] == 0.0
    assert all(set(m) == METRIC_KEYS for m in result["metrics"].values())
    assert result["n_videos"] == 2 and result["n_frames"] == len(lines)
    n = len(lines)
    expected = [
        rf"pred\.jsonl:{n + 1}: Expecting value",
        rf"pred\.jsonl:{n + 2}: `frame` must be a non-negative integer",
        rf"pred\.jsonl:{n + 3}: prediction for frame 99999 of video 'VID01', which has no label",
        rf"pred\.jsonl:{n + 4}: prediction for video 'VID77', which has no triplet labels",
        rf"pred\.jsonl:{n + 5}: second prediction for frame 0 of video 'VID01'",
    ]
    assert len(result["problems"]) == len(expected)
    for pattern, problem in zip(expected, result["problems"], strict=False):
        assert re.search(pattern, problem), (pattern, problem)


def test_same_seed_same_bounds_and_unread_answers_count(synthetic_site: Path, tmp_path: Path) -> None:
    lines = _perfect_lines(synthetic_site / "cholect50")
    for k in range(0, len(lines), 3):
        lines[k]["answer"] = "<answer>the grasper is busy</answer>"  # unreadable: a parse failure, never a guess
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rt = runtime_for("triplet")
    labels, _ = load_label_sets(rt, [LabelSpec(synthetic_site / "cholect50", "cholect50", "t50")])
    records, problems = read_predictions(pred)
    a, b = (score_records(rt, labels, records, seed=11, replicates=300).to_json() for _ in range(2))
    assert a == b and not problems
    em = a["metrics"]["exact_match"]
    assert em["estimate"] < 1.0 and em["ci_low"] <= em["estimate"] <= em["ci_high"]
    assert a["parse_fail_rate"] == pytest.approx(len(range(0, len(lines), 3)) / len(lines))
    c = score_records(rt, labels, records, seed=12, replicates=300).to_json()
    assert c["metrics"]["exact_match"]["estimate"] == em["estimate"] and c["ci"]["seed"] == 12


def test_a_video_in_two_datasets_needs_the_dataset_named(synthetic_site: Path, tmp_path: Path) -> None:
    rt = runtime_for("triplet")
    spec = synthetic_site / "cholect50"
    labels, _ = load_label_sets(rt, [LabelSpec(spec, "cholect50", "a"), LabelSpec(spec, "cholect50", "b")])
    line = _perfect_lines(spec)[0]
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps(line) + "\n" + json.dumps({**line, "dataset": "b"}) + "\n")
    records, _ = read_predictions(pred)
    score = score_records(rt, labels, records, seed=1, replicates=100)
    assert len(score.problems) == 1 and "is in several datasets ['a', 'b']" in score.problems[0]
    assert score.estimates["exact_match"].n_frames == 1
    with pytest.raises(DataError, match="no predictions match the triplet labels"):
        score_records(rt, labels, records[:1], seed=1, replicates=100)
