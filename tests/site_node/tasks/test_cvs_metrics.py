"""CVS conventions: AP with positives in 1 of 5 videos keeps its CI, F1 undefined is NaN, the means over criteria."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from site_node.metrics import cvs as cvs_metrics


def _videos(n_videos: int = 5, frames: int = 8, seed: int = 4) -> list[cvs_metrics.CvsVideo]:
    """C1 achieved only in video 0 (3 of its frames); C2, C3 common. Scores informative but noisy."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n_videos):
        truth = [(v == 0 and f < 3, bool(rng.random() < 0.5), bool(rng.random() < 0.4)) for f in range(frames)]
        scores = np.clip(np.array(truth, dtype=float) * 0.5 + rng.random((frames, 3)) * 0.6, 0, 1)
        pred = [tuple(bool(x) for x in row > 0.5) for row in scores]
        out.append(cvs_metrics.CvsVideo(truth, pred, scores))
    return out


def test_ap_with_positives_in_one_of_five_videos_keeps_its_interval() -> None:
    videos = _videos()
    got = cvs_metrics.summarise(videos, 3, seed=9, replicates=300)["ap_c1"]
    y = np.concatenate([[t[0] for t in v.truth] for v in videos])
    s = np.concatenate([v.scores[:, 0] for v in videos if v.scores is not None])
    assert got.estimate == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # Resampled within (video has a C1 positive) strata: the one positive video is in every resample.
    assert got.undefined_share == 0.0
    assert math.isfinite(got.ci_low) and math.isfinite(got.se_pooling)
    assert got.ci_low <= got.estimate <= got.ci_high


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ([False, False], [False, False], math.nan),  # nothing to find, nothing predicted: undefined
        ([True, False], [True, False], 1.0),
        ([False, False], [True, False], 0.0),  # a false alarm with nothing to find
        ([True, True], [True, False], 2 / 3),
    ],
)
def test_f1_undefined_is_nan_as_sklearn_with_zero_division_nan(
    truth: list[bool], pred: list[bool], expected: float
) -> None:
    y, p = np.array(truth), np.array(pred)
    ref = f1_score(y, p, zero_division=np.nan)
    assert cvs_metrics.f1(y, p) == pytest.approx(ref, nan_ok=True)
    assert cvs_metrics.f1(y, p) == pytest.approx(expected, nan_ok=True)


def test_headline_mean_balanced_accuracy_and_map_are_means_over_criteria() -> None:
    got = cvs_metrics.summarise(_videos(), 3, seed=9, replicates=100)
    bal = np.mean([got[f"balanced_accuracy_c{k}"].estimate for k in (1, 2, 3)])
    assert got["balanced_accuracy"].estimate == pytest.approx(bal, abs=1e-12)
    assert got["map"].estimate == pytest.approx(np.mean([got[f"ap_c{k}"].estimate for k in (1, 2, 3)]), abs=1e-12)
