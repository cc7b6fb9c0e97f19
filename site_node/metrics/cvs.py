"""Critical-view-of-safety metrics per criterion, pooled over the site's frames with a video-level bootstrap CI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from site_node.metrics.bootstrap import Estimate, bootstrap_estimate
from site_node.metrics.triplet import average_precision

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
    """Binary F1 of 'achieved'; undefined (NaN) when there is nothing to find and nothing predicted."""
    tp, fp, fn = np.sum(y & p), np.sum(~y & p), np.sum(y & ~p)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


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
        s = np.concatenate([a[2] for a in parts]) if all(a[2] is not None for a in parts) else None
        return metric(y, p, s)

    return statistic


def _metrics(scored: bool) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]]:
    table: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]] = {
        "accuracy": lambda y, p, s: float(np.mean(y == p)),
        "balanced_accuracy": lambda y, p, s: balanced_accuracy(y, p),
        "f1": lambda y, p, s: f1(y, p),
    }
    if scored:  # mypy: s is an array here (scored), the table's signature allows None for the others
        table["ap"] = lambda y, p, s: average_precision(y, s)  # type: ignore[arg-type]
        table["brier"] = lambda y, p, s: brier(y, s)  # type: ignore[arg-type]
    else:  # AP on hard predictions only, and named so; no Brier score without probabilities
        table["ap_hard"] = lambda y, p, s: average_precision(y, p.astype(float))
    return table


def _name(metric: str, k: int) -> str:
    return f"ap_c{k + 1}_hard" if metric == "ap_hard" else f"{metric}_c{k + 1}"


def _strata(per_crit: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]], ks: Sequence[int]) -> list[int]:
    """Per video, which of the criteria `ks` it has a positive frame of (a bit each): resampled within these."""
    n = len(per_crit[0]) if per_crit else 0
    return [sum(int(bool(per_crit[k][v][0].any())) << j for j, k in enumerate(ks)) for v in range(n)]


def summarise(videos: Sequence[CvsVideo], n_criteria: int, *, seed: int, replicates: int) -> dict[str, Estimate]:
    """Per criterion accuracy, balanced accuracy, F1 (and AP, Brier with scores), and their means over criteria:
    `accuracy` (the Arena component), `balanced_accuracy` (the table headline) and `map` (with scores)."""
    n_frames = sum(len(v.truth) for v in videos)
    n_failed = sum(a is None for v in videos for a in v.pred)
    scored = bool(videos) and all(v.scores is not None for v in videos)
    per_crit = [[_arrays(v, k) for v in videos] for k in range(n_criteria)]
    metrics = _metrics(scored)
    n = len(videos)
    means = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy"}
    if scored:
        means["map"] = "ap"
    out: dict[str, Estimate] = {}
    for m, (name, metric) in enumerate(means.items()):
        parts = [_pooled(pc, metrics[metric]) for pc in per_crit]
        mean = lambda idx, parts=parts: float(np.nanmean([f(idx) for f in parts]))  # noqa: E731
        strata = _strata(per_crit, range(n_criteria)) if metric == "ap" else None
        out[name] = bootstrap_estimate(
            n, mean, n_frames=n_frames, n_failed=n_failed, seed=seed + m, replicates=replicates, strata=strata
        )
    for m, (metric, fn) in enumerate(metrics.items()):
        for k in range(n_criteria):
            out[_name(metric, k)] = bootstrap_estimate(
                n,
                _pooled(per_crit[k], fn),
                n_frames=n_frames,
                n_failed=n_failed,
                seed=seed + 8 + m * n_criteria + k,
                replicates=replicates,
                strata=_strata(per_crit, [k]),
            )
    return out
