"""The Cholec80-script-compatible phase variant (Evaluate.m + Main.m), against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from site_node.metrics.phase_relaxed import video_relaxed
from site_node.task_runtime import Answer, runtime_for

NAN = math.nan


@pytest.mark.parametrize(
    ("truth", "pred", "window", "acc", "scores"),
    [
        # Late transition: phase 2 starts at frame 4, the model stays in phase 1 one frame longer. Within 2 frames
        # of phase 2's start a diff of -1 is forgiven: every frame counts. Phase 1: union 0-4, tp 5 -> P 5/5,
        # R 5/4 clipped to 1, J 5/5; phase 2: union 4-7, tp 4 -> P 4/3 clipped to 1, R 4/4, J 4/4.
        ([1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 2, 2, 2], 2, 1.0, [[1, 1, 1], [1, 1, 1]]),
        # Early transition: the model moves to phase 2 one frame early (frame 3, diff +1 at phase 1's end). The
        # script's mask, taken on the last 2 frames, is applied to the FIRST 2 frames of the segment, so frame 3
        # stays wrong: acc 7/8. Phase 1: union 0-3, tp 3 -> P 3/3, R 3/4, J 3/4; phase 2: union 3-7, tp 4 ->
        # P 4/5, R 4/4, J 4/5.
        ([1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 2, 2, 2, 2, 2], 2, 7 / 8, [[1, 3 / 4, 3 / 4], [4 / 5, 1, 4 / 5]]),
        # A wrong phase two away in the middle of phase 1 is never forgiven: acc 7/8; phase 3 absent -> NaN row.
        ([1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 3, 1, 2, 2, 2, 2], 2, 7 / 8, [[1, 3 / 4, 3 / 4], [1, 1, 1], [NAN] * 3]),
        # An unreadable answer (-100) at a boundary is never forgiven either.
        ([1, 1, 2, 2], [1, 1, -100, 2], 2, 3 / 4, [[1, 1, 1], [1, 1 / 2, 1 / 2]]),
    ],
)
def test_relaxed_boundary_by_hand(
    truth: list[int], pred: list[int], window: int, acc: float, scores: list[list[float]]
) -> None:
    n = len(scores)
    got_acc, got = video_relaxed(np.array(truth), np.array(pred), n, window)
    assert got_acc == pytest.approx(acc)
    np.testing.assert_allclose(got, np.array(scores, dtype=float), equal_nan=True)


def test_runtime_releases_named_relaxed_metrics_with_a_window_from_the_sampling_interval() -> None:
    rt = runtime_for("phase")
    a, b = rt.task.label_names[:2]
    truth = [a] * 30 + [b] * 30
    pred = [a] * 35 + [b] * 25  # 5 frames late into b
    videos = [[(t, Answer(f"<answer>{p}</answer>")) for t, p in zip(truth, pred, strict=False)]] * 2
    rt.frame_interval_s = 1.0  # 10 s = 10 frames: the late frames are forgiven
    assert rt.summarise(videos, seed=1, replicates=50)["accuracy_relaxed"].estimate == pytest.approx(1.0)
    rt.frame_interval_s = 5.0  # 10 s = 2 frames: 3 of the 5 late frames stay wrong
    assert rt.summarise(videos, seed=1, replicates=50)["accuracy_relaxed"].estimate == pytest.approx(57 / 60)
    assert rt.summarise(videos, seed=1, replicates=50)["accuracy"].estimate == pytest.approx(55 / 60)
