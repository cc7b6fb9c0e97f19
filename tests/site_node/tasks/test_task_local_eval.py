"""`site_node evaluate` runs all five tasks on synthetic data; `site_node score` reproduces each task's metrics."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from test_task_scoring import _site_node

from site_node.local_eval import run_local, summary_lines

PROTOCOL = Path(__file__).resolve().parents[3] / "protocols" / "studies" / "surgbench-external.yaml"
TASKS = ["phase", "triplet", "action", "cvs", "localization"]


@pytest.fixture(scope="module")
def evaluated(
    tiny_model_dir: Path, synthetic_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("results")
    seen: list[tuple[str, int, int]] = []
    summary = run_local(
        PROTOCOL,
        synthetic_site,
        out,
        model=tiny_model_dir,
        device="cpu",
        batch_size=8,
        progress=lambda t, d, n: seen.append((t, d, n)),
        say=lambda _: None,
    )
    assert [t for t, d, n in seen if d == n] == TASKS  # the progress callback reaches every task's total
    return out, summary


def test_all_five_tasks_run_and_the_arena_score_names_them(evaluated: tuple[Path, dict]) -> None:
    out, summary = evaluated
    assert list(summary["tasks"]) == TASKS and not summary["not_run"]
    heads = [summary["tasks"][t]["metrics"][summary["tasks"][t]["headline"]]["estimate"] for t in TASKS]
    arena = summary["arena_score"]
    assert arena["score"] == pytest.approx(sum(heads) / 5)
    assert arena["tasks"] == [
        "phase:accuracy",
        "triplet:exact_match",
        "action:accuracy",
        "cvs:accuracy",
        "localization:miou",
    ]
    assert summary["model"]["matches_protocol"] is False  # the tiny model is not the protocol's: a dry run warns
    assert set(summary["tasks"]["triplet"]["metrics"]) >= {"ap_ivt", "ap_i"}  # scored candidates: real AP
    assert summary["tasks"]["localization"]["ap_computed_on"] == "hard predictions"
    assert "Arena Score" in summary_lines(summary)[-1] and "localization:miou" in summary_lines(summary)[-1]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["arena_score"] == arena


def test_predictions_stay_local_and_carry_what_score_needs(evaluated: tuple[Path, dict]) -> None:
    out, summary = evaluated
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert {x["task"] for x in lines} == set(TASKS)
    assert all({"dataset", "video", "frame", "answer", "image_size"} <= set(x) for x in lines)
    assert all("logprobs" in x for x in lines if x["task"] in ("triplet", "cvs"))
    assert len([x for x in lines if x["task"] == "cvs"]) == summary["tasks"]["cvs"]["n_frames"]


def test_score_reproduces_every_task_exactly(evaluated: tuple[Path, dict]) -> None:
    out, _ = evaluated
    commands = [
        shlex.split(c) for c in (out / "score-commands.sh").read_text().splitlines() if c.startswith("site_node")
    ]
    assert len(commands) == len(TASKS)
    for argv in commands:
        assert _site_node(*argv[1:]) == 0
        task = argv[argv.index("--task") + 1]
        rescored = json.loads(Path(argv[argv.index("--out") + 1]).read_text())
        assert rescored == json.loads((out / f"metrics-{task}.json").read_text()), task
