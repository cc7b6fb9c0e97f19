"""Resume at video granularity: a run killed after its first video continues there and ends as an unbroken run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from protocols.study import TaskPlan
from site_node.checkpoint import VideoCheckpoint, done_file
from site_node.evaluation import evaluate_task
from site_node.local_eval import open_data
from site_node.model.loading import load_model
from site_node.scoring import Record
from site_node.task_runtime import Answer

REPO = Path(__file__).resolve().parents[2]
# The child evaluates the phase task frame by frame (batch 1) so that it is still working when it is killed.
CHILD = """
import sys
from pathlib import Path
from protocols.study import TaskPlan
from site_node.evaluation import evaluate_task
from site_node.local_eval import open_data
from site_node.model.loading import load_model
lm = load_model(Path(sys.argv[1]), device="cpu")
store = open_data(Path(sys.argv[2])).store
evaluate_task(lm, store, TaskPlan("phase", 1.0, 24), batch_size=1, seed=5, replicates=50, predictions=Path(sys.argv[3]))
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_killed_run_resumes_after_its_finished_videos(
    tiny_model_dir: Path, synthetic_site: Path, tmp_path: Path
) -> None:
    predictions = tmp_path / "predictions.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_model_dir), str(synthetic_site), str(predictions)], env=env
    )
    try:
        deadline = time.monotonic() + 600
        while not _lines(done_file(predictions)) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    marked = _lines(done_file(predictions))
    assert child.returncode == -signal.SIGKILL and len(marked) == 1, "the child must die after exactly one video"
    first_video = json.loads(marked[0])[2]
    kept = [json.loads(line) for line in _lines(predictions)]
    assert kept and {r["video"] for r in kept} == {first_video}

    lm = load_model(tiny_model_dir, device="cpu")
    store = open_data(synthetic_site).store
    plan, kw = TaskPlan("phase", 1.0, 24), {"batch_size": 1, "seed": 5, "replicates": 50}
    reported: list[int] = []
    resumed = evaluate_task(lm, store, plan, predictions=predictions, progress=lambda t, d, n: reported.append(d), **kw)
    counted: list[int] = []
    fresh = evaluate_task(
        lm, store, plan, predictions=tmp_path / "fresh.jsonl", progress=lambda t, d, n: counted.append(d), **kw
    )
    # Every video but the first ran again, counted after the first's frames; the totals agree.
    assert len(reported) == len(counted) - 1 and reported[0] > len(kept) and reported[-1] == counted[-1]
    got, want = (sorted(_lines(p)) for p in (predictions, tmp_path / "fresh.jsonl"))
    assert got == want  # every frame once, answers and scores as an uninterrupted run's
    assert resumed.score is not None and fresh.score is not None
    assert resumed.score.to_json() == fresh.score.to_json()
    # Done again: nothing left to run, the same result from the checkpoint alone.
    again = evaluate_task(lm, store, plan, predictions=predictions, **kw)
    assert again.score is not None and again.score.to_json() == fresh.score.to_json()


def test_answers_without_a_done_mark_are_dropped_on_resume(tmp_path: Path) -> None:
    """A crash between writing a video's answers and marking it: those answers go, the video runs again."""
    predictions = tmp_path / "p.jsonl"
    ckpt = VideoCheckpoint(predictions)
    ckpt.commit("phase", "ds", "v1", [Record("v1", 0, Answer("a"), "ds", "phase")])
    with predictions.open("a") as out:
        out.write(json.dumps(Record("v2", 0, Answer("b"), "ds", "phase").to_json()) + "\n")
    with done_file(predictions).open("a") as marks:
        marks.write('["phase", "ds"')  # a torn mark
    resumed = VideoCheckpoint(predictions)
    assert resumed.done == {("phase", "ds", "v1")}
    assert [r.video for recs in resumed.finished("phase").values() for r in recs] == ["v1"]
    assert [json.loads(line)["video"] for line in _lines(predictions)] == ["v1"]
    assert resumed.finished("cvs") == {}
