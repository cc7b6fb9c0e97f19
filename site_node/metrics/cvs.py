"""Critical-view-of-safety metrics per criterion, pooled over the site's frames with a video-level bootstrap CI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from site_node.metrics.bootstrap import Estimate
from site_node.metrics.triplet import average_precision, resampled_estimate

CvsAnswer = tuple[bool, ...] | None


@dataclass(frozen=True)
class CvsVideo:
    truth: list[tuple[bool, ...]]
    pred: list[CvsAnswer]
    scores: np.ndarray | None  # (frames, criteria) P(achieved) from candidate scoring, or None


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over the classes present in the truth (scikit-learn's balanced_accuracy_score)."""
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)])) if y.size else float("nan")


def f1(y: np.ndarray, p: np.ndarray) -> float:
    """Binary F1 of 'achieved'; 0 when there is nothing to find and nothing predicted (zero_division=0)."""
    tp, fp, fn = np.sum(y & p), np.sum(~y & p), np.sum(y & ~p)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def brier(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s - y) ** 2)) if y.size else float("nan")


def _arrays(v: CvsVideo, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Truth, hard prediction (an unread answer is the wrong one, never a guess) and scores of criterion k."""
    y = np.array([t[k] for t in v.truth], dtype=bool)
    p = np.array([(a[k] if a is not None else not t[k]) for t, a in zip(v.truth, v.pred, strict=False)], dtype=bool)
    return y, p, (v.scores[:, k] if v.scores is not None else None)


def _pooled(
    per_video: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float],
) -> Callable[[np.ndarray], float]:
    def statistic(idx: np.ndarray) -> float:
        parts = [per_video[i] for i in idx]
        y, p = np.concatenate([a[0] for a in parts]), np.concatenate([a[1] for a in parts])
        s = np.concatenate([a[2] for a in parts]) if all(a[2] is not None for a in parts) else None  # type: ignore[misc]
        return metric(y, p, s)

    return statistic


def _metrics(scored: bool) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]]:
    table: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]] = {
        "accuracy": lambda y, p, s: float(np.mean(y == p)),
        "balanced_accuracy": lambda y, p, s: balanced_accuracy(y, p),
        "f1": lambda y, p, s: f1(y, p),
    }
    if scored:
        table["ap"] = lambda y, p, s: average_precision(y, s)  # type: ignore[arg-type]
        table["brier"] = lambda y, p, s: brier(y, s)  # type: ignore[arg-type]
    else:  # AP on hard predictions only, and named so; no Brier score without probabilities
        table["ap_hard"] = lambda y, p, s: average_precision(y, p.astype(float))
    return table


def _name(metric: str, k: int) -> str:
    return f"ap_c{k + 1}_hard" if metric == "ap_hard" else f"{metric}_c{k + 1}"


def summarise(videos: Sequence[CvsVideo], n_criteria: int, *, seed: int, replicates: int) -> dict[str, Estimate]:
    """Per criterion accuracy, balanced accuracy, F1 (and AP, Brier with scores); `accuracy` is their mean accuracy."""
    n_frames = sum(len(v.truth) for v in videos)
    n_failed = sum(a is None for v in videos for a in v.pred)
    scored = bool(videos) and all(v.scores is not None for v in videos)
    kw = {"n_frames": n_frames, "n_failed": n_failed, "replicates": replicates}
    per_crit = [[_arrays(v, k) for v in videos] for k in range(n_criteria)]
    metrics = _metrics(scored)
    accuracies = [_pooled(pc, metrics["accuracy"]) for pc in per_crit]
    mean_acc = lambda idx: float(np.mean([acc(idx) for acc in accuracies]))
    out = {"accuracy": resampled_estimate(len(videos), mean_acc, seed=seed, **kw)}
    for m, (metric, fn) in enumerate(metrics.items()):
        for k in range(n_criteria):
            out[_name(metric, k)] = resampled_estimate(
                len(videos), _pooled(per_crit[k], fn), seed=seed + 1 + m * n_criteria + k, **kw
            )
    return out
