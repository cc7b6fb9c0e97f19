"""Cholec80-script-compatible phase metrics: the 10-second relaxed boundary, per phase over videos, then phases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from site_node.metrics.bootstrap import Estimate, bootstrap_estimate, summarise_videos

RELAXED_METRICS = ("accuracy_relaxed", "precision_relaxed", "recall_relaxed", "jaccard_relaxed")
UNREAD = -100  # an unreadable answer: never within 1 or 2 phases of the truth, so never forgiven


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end inclusive) of each run of True (MATLAB's bwconncomp on a 1-D mask)."""
    edges = np.diff(np.r_[0, mask.astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _relax(cur: np.ndarray, phase: int, t: int) -> None:
    """The script's relaxed boundary on one ground-truth segment (phase numbered from 1), in place.

    As in Evaluate.m, `curDiff(mask) = 0` with a mask of length t indexes the segment's FIRST t frames, also for
    the early-transition mask computed on its last t frames; this is kept so the numbers match the script's.
    """
    late = (-1, -2) if phase in (6, 7) else (-1,)
    early = (1, 2) if phase in (4, 5, 6, 7) else (1,)
    cur[:t][np.isin(cur[:t], late)] = 0
    mask = np.isin(cur[len(cur) - t :], early)
    cur[:t][mask] = 0


def video_relaxed(truth: np.ndarray, pred: np.ndarray, n_phases: int, window: int) -> tuple[float, np.ndarray]:
    """(accuracy, per-phase [precision, recall, jaccard] rows) of one video, phases numbered 1..n_phases.

    Per phase absent from the ground truth: NaN. Precision of a phase never predicted: tp/0 (NaN or, once clipped,
    1) as in the script; every value is clipped at 1 like its Main.m does at 100.
    """
    diff = (pred - truth).astype(float)
    updated = diff.copy()
    for phase in range(1, n_phases + 1):
        for s, e in _runs(truth == phase):
            cur = diff[s : e + 1].copy()
            _relax(cur, phase, min(window, len(cur)))
            updated[s : e + 1] = cur
    scores = np.full((n_phases, 3), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for phase in range(1, n_phases + 1):
            gt = truth == phase
            if not gt.any():
                continue
            union = gt | (pred == phase)
            tp = float(np.sum(updated[union] == 0))
            scores[phase - 1] = [tp / np.sum(pred == phase), tp / gt.sum(), tp / union.sum()]
    scores = np.where(np.isnan(scores), np.nan, np.minimum(scores, 1.0))
    return float(np.mean(updated == 0)), scores


def summarise(
    videos: Sequence[tuple[Sequence[str], Sequence[str | None]]],
    labels: Sequence[str],
    *,
    window: int,
    seed: int,
    replicates: int,
) -> dict[str, Estimate]:
    """Accuracy as the mean over videos; precision, recall, Jaccard as the mean over phases of each phase's mean
    over the videos where it occurs (NaN-skipping, as the script's nanmean; mean over phases present)."""
    index = {name: k + 1 for k, name in enumerate(labels)}
    accs, per = [], []
    for truth, pred in videos:
        t = np.array([index[x] for x in truth])
        p = np.array([index[x] if x is not None else UNREAD for x in pred])
        acc, scores = video_relaxed(t, p, len(labels), window)
        accs.append(acc)
        per.append(scores)
    cube = np.stack(per) if per else np.zeros((0, len(labels), 3))
    n_frames = sum(len(t) for t, _ in videos)
    n_failed = sum(sum(x is None for x in p) for _, p in videos)
    out = {
        "accuracy_relaxed": summarise_videos(
            accs, n_frames=n_frames, n_failed=n_failed, seed=seed, replicates=replicates
        )
    }
    for k, name in enumerate(("precision_relaxed", "recall_relaxed", "jaccard_relaxed")):
        stat = lambda idx, k=k: float(np.nanmean(np.nanmean(cube[idx, :, k], axis=0)))  # noqa: E731
        out[name] = bootstrap_estimate(
            len(videos), stat, n_frames=n_frames, n_failed=n_failed, seed=seed + 1 + k, replicates=replicates
        )
    return out
