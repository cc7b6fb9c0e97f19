"""Triplet metrics: ivtmetrics-style video-wise AP (i, v, t, iv, it, ivt), exact match, sample F1; shared AP helpers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from site_node.metrics.bootstrap import Estimate, bootstrap_estimate, summarise_videos

COMPONENTS = ("i", "v", "t", "iv", "it", "ivt")
# A frame's answer: a set of canonical triplet names, or None when it could not be read.
TripletSet = frozenset[str] | None


def average_precision(y_true: np.ndarray, scores: np.ndarray, n_pos: int | None = None) -> float:
    """Step-wise AP as scikit-learn computes it (tied scores form one threshold); NaN without positives.

    `n_pos` counts positives the ranking never reaches (missed ground-truth boxes); default: the positives given.
    """
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(scores, dtype=float)
    total = float(y.sum()) if n_pos is None else float(n_pos)
    if total <= 0 or y.size == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last index of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class Decomposition:
    """Triplet -> component classes (by name: 'grasper,dissect,gallbladder' -> i 'grasper', iv 'grasper,dissect')."""

    triplets: tuple[str, ...]
    members: dict[str, np.ndarray]  # component -> (n_triplets, n_classes) 0/1

    @classmethod
    def of(cls, triplets: Sequence[str]) -> Decomposition:
        parts = [t.split(",") for t in triplets]
        keys = {
            "i": lambda p: p[0],
            "v": lambda p: p[1],
            "t": lambda p: p[2],
            "iv": lambda p: f"{p[0]},{p[1]}",
            "it": lambda p: f"{p[0]},{p[2]}",
            "ivt": lambda p: ",".join(p),
        }
        members = {}
        for comp, key in keys.items():
            classes = sorted({key(p) for p in parts})
            m = np.zeros((len(parts), len(classes)))
            for row, p in enumerate(parts):
                m[row, classes.index(key(p))] = 1.0
            members[comp] = m
        return cls(tuple(triplets), members)

    def component(self, matrix: np.ndarray, comp: str) -> np.ndarray:
        """Per-frame component values: the max over the triplets that share the component (as ivtmetrics does)."""
        m = self.members[comp]
        return np.max(matrix[:, :, None] * m[None, :, :], axis=1)

    def indicator(self, sets: Sequence[TripletSet]) -> np.ndarray:
        index = {t: k for k, t in enumerate(self.triplets)}
        out = np.zeros((len(sets), len(self.triplets)))
        for row, s in enumerate(sets):
            for t in s or ():
                out[row, index[t]] = 1.0
        return out


def video_ap(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP per class over one video's frames; NaN for classes absent from the video's ground truth."""
    return np.array([average_precision(truth[:, c], scores[:, c]) for c in range(truth.shape[1])])


def videowise_map(per_video: np.ndarray) -> float:
    """ivtmetrics' video-wise mAP: the mean over classes of each class's mean AP over the videos it occurs in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.nanmean(per_video, axis=0)))


def frame_f1(truth: frozenset[str], pred: TripletSet) -> float:
    """Sample F1 (1 when both sets are empty, as scikit-learn with zero_division=1); unread answers score 0."""
    if pred is None:
        return 0.0
    if not truth and not pred:
        return 1.0
    return 2 * len(truth & pred) / (len(truth) + len(pred))


def _map_of(aps: np.ndarray) -> Callable[[np.ndarray], float]:
    """The video-wise mAP of a resample of videos (rows of per-video, per-class AP)."""
    return lambda idx: videowise_map(aps[idx])


@dataclass(frozen=True)
class TripletVideo:
    truth: list[frozenset[str]]
    pred: list[TripletSet]
    scores: np.ndarray | None  # (frames, triplets) probabilities from candidate scoring, or None


def summarise(
    videos: Sequence[TripletVideo], triplets: Sequence[str], *, seed: int, replicates: int
) -> dict[str, Estimate]:
    """Exact match and sample F1 as means over videos; AP video-wise, on scores where every frame has them."""
    n_frames = sum(len(v.truth) for v in videos)
    n_failed = sum(p is None for v in videos for p in v.pred)
    out = {
        "exact_match": summarise_videos(
            [float(np.mean([p == t for t, p in zip(v.truth, v.pred, strict=False)])) for v in videos],
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed,
            replicates=replicates,
        ),
        "f1": summarise_videos(
            [float(np.mean([frame_f1(t, p) for t, p in zip(v.truth, v.pred, strict=False)])) for v in videos],
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed + 1,
            replicates=replicates,
        ),
    }
    dec = Decomposition.of(triplets)
    scored = bool(videos) and all(v.scores is not None for v in videos)
    suffix = "" if scored else "_hard"
    for k, comp in enumerate(COMPONENTS):
        aps = np.stack(
            [
                video_ap(
                    dec.component(dec.indicator(v.truth), comp),
                    dec.component(v.scores if scored and v.scores is not None else dec.indicator(v.pred), comp),
                )
                for v in videos
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_video = np.nanmean(aps, axis=1)
        sd = float(np.nanstd(per_video, ddof=1)) if np.sum(~np.isnan(per_video)) > 1 else float("nan")
        out[f"ap_{comp}{suffix}"] = bootstrap_estimate(
            len(videos),
            _map_of(aps),
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed + 2 + k,
            replicates=replicates,
            sd=sd,
        )
    return out
