"""Phase recognition metrics per video (Cholec80 convention), summarised over videos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from site_node.metrics.bootstrap import Estimate, summarise_videos

PHASE_METRICS = ("accuracy", "precision", "recall", "f1", "jaccard")


@dataclass(frozen=True)
class VideoScores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    jaccard: float


def video_scores(truth: Sequence[str], pred: Sequence[str | None]) -> VideoScores:
    """Accuracy over frames; precision/recall/F1/Jaccard macro-averaged over the phases present in the truth.

    An unparsed prediction (None) is a wrong answer for every phase, never a guess.
    """
    if len(truth) != len(pred) or not truth:
        raise ValueError(f"expected equal, non-empty truth and prediction lists, got {len(truth)} and {len(pred)}")
    t = np.asarray(truth, dtype=object)
    p = np.asarray([x if x is not None else "\0unparsed" for x in pred], dtype=object)
    acc = float(np.mean(t == p))
    prec, rec, f1, jac = [], [], [], []
    for cls in sorted(set(truth)):
        tp = float(np.sum((t == cls) & (p == cls)))
        fp = float(np.sum((t != cls) & (p == cls)))
        fn = float(np.sum((t == cls) & (p != cls)))
        prec.append(tp / (tp + fp) if tp + fp else 0.0)
        rec.append(tp / (tp + fn) if tp + fn else 0.0)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        jac.append(tp / (tp + fp + fn) if tp + fp + fn else 0.0)
    return VideoScores(acc, float(np.mean(prec)), float(np.mean(rec)), float(np.mean(f1)), float(np.mean(jac)))


def summarise(
    videos: Sequence[tuple[Sequence[str], Sequence[str | None]]],
    *,
    seed: int,
    replicates: int = 1000,
    metrics: Sequence[str] = PHASE_METRICS,
) -> dict[str, Estimate]:
    """Per-metric mean over videos with a video-level bootstrap CI (any of the per-video single-label scores)."""
    scores = [video_scores(t, p) for t, p in videos]
    n_frames = sum(len(t) for t, _ in videos)
    n_failed = sum(sum(x is None for x in p) for _, p in videos)
    return {
        name: summarise_videos(
            [getattr(s, name) for s in scores],
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed + i,
            replicates=replicates,
        )
        for i, name in enumerate(metrics)
    }
