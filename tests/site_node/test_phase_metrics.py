"""Phase metrics against scikit-learn on random cases, and the cluster bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from site_node.metrics.bootstrap import summarise_videos
from site_node.metrics.phase import summarise, video_scores

PHASES = ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection"]


@pytest.mark.parametrize("seed", range(20))
def test_video_scores_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    truth = list(rng.choice(PHASES, size=n))
    pred = [t if rng.random() < 0.6 else str(rng.choice(PHASES)) for t in truth]
    present = sorted(set(truth))
    s = video_scores(truth, pred)
    kw = {"labels": present, "average": "macro", "zero_division": 0}
    assert s.accuracy == pytest.approx(accuracy_score(truth, pred), abs=1e-12)
    assert s.precision == pytest.approx(precision_score(truth, pred, **kw), abs=1e-6)
    assert s.recall == pytest.approx(recall_score(truth, pred, **kw), abs=1e-6)
    assert s.f1 == pytest.approx(f1_score(truth, pred, **kw), abs=1e-6)
    assert s.jaccard == pytest.approx(jaccard_score(truth, pred, **kw), abs=1e-6)


def test_unparsed_answers_count_as_wrong() -> None:
    s = video_scores(["Preparation"] * 4, ["Preparation", None, None, "Preparation"])
    assert s.accuracy == 0.5 and s.recall == 0.5 and s.precision == 1.0


def test_summary_is_mean_over_videos_with_seeded_ci() -> None:
    videos = [(["Preparation"] * 10, ["Preparation"] * k + [None] * (10 - k)) for k in (2, 5, 8, 10, 7)]
    a = summarise(videos, seed=7, replicates=500)
    b = summarise(videos, seed=7, replicates=500)
    acc = a["accuracy"]
    assert acc.estimate == pytest.approx(np.mean([0.2, 0.5, 0.8, 1.0, 0.7]))
    assert acc.ci_low < acc.estimate < acc.ci_high and (acc.ci_low, acc.ci_high) == (
        b["accuracy"].ci_low,
        b["accuracy"].ci_high,
    )
    assert acc.n_videos == 5 and acc.n_frames == 50 and acc.parse_fail_rate == pytest.approx(18 / 50)


def test_bootstrap_ci_empty() -> None:
    est = summarise_videos([], n_frames=0, n_failed=0, seed=1)
    assert np.isnan(est.estimate) and est.n_videos == 0
