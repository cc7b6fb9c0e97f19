"""Localization metrics: mIoU of matched boxes per video, and AP@0.5 pooled over the site's frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from site_node.labels import LabelledBox
from site_node.metrics.bootstrap import Estimate, summarise_videos
from site_node.metrics.boxes import match
from site_node.metrics.triplet import average_precision, resampled_estimate

Boxes = list[LabelledBox] | None  # None: the answer could not be read


@dataclass(frozen=True)
class BoxVideo:
    truth: list[list[LabelledBox]]
    pred: list[Boxes]


def frame_ious(truth: Sequence[LabelledBox], pred: Boxes) -> list[float]:
    """One IoU per ground-truth box: with its matched prediction (same label, Hungarian), else 0."""
    got = {t: iou for t, _, iou in match(truth, pred or [])}
    return [got.get(i, 0.0) for i in range(len(truth))]


def video_miou(v: BoxVideo) -> float:
    return float(np.mean([iou for t, p in zip(v.truth, v.pred, strict=False) for iou in frame_ious(t, p)]))


def detections(v: BoxVideo, threshold: float) -> dict[str, tuple[list[float], list[float], int]]:
    """Per label: (is true positive, score, number of ground-truth boxes); text boxes all score 1."""
    out: dict[str, tuple[list[float], list[float], int]] = {}
    for truth, pred in zip(v.truth, v.pred, strict=False):
        hits = {j for _, j, iou in match(truth, pred or []) if iou >= threshold}
        for label in {b.label for b in truth} | {b.label for b in pred or []}:
            tp, sc, n = out.get(label, ([], [], 0))
            mine = [j for j, b in enumerate(pred or []) if b.label == label]
            out[label] = (
                tp + [float(j in hits) for j in mine],
                sc + [1.0] * len(mine),
                n + sum(b.label == label for b in truth),
            )
    return out


Detections = dict[str, tuple[list[float], list[float], int]]


def pooled_ap(per_video: Sequence[Detections]) -> float:
    """Mean over labels with ground truth of AP over all detections (ties at score 1: precision x recall)."""
    merged: Detections = {}
    for dets in per_video:
        for label, (tp, sc, n) in dets.items():
            a, b, c = merged.get(label, ([], [], 0))
            merged[label] = (a + tp, b + sc, c + n)
    aps = [
        average_precision(np.array(tp), np.array(sc), n_pos=n) if tp else 0.0 for tp, sc, n in merged.values() if n > 0
    ]
    return float(np.mean(aps)) if aps else float("nan")


def summarise(videos: Sequence[BoxVideo], *, threshold: float, seed: int, replicates: int) -> dict[str, Estimate]:
    """mIoU as the mean over videos; AP@threshold on hard predictions (text boxes carry no confidence)."""
    n_frames = sum(len(v.truth) for v in videos)
    n_failed = sum(p is None for v in videos for p in v.pred)
    tag = f"ap{round(threshold * 100)}_hard"
    dets = [detections(v, threshold) for v in videos]  # matched once; the bootstrap only regroups them
    return {
        "miou": summarise_videos(
            [video_miou(v) for v in videos], n_frames=n_frames, n_failed=n_failed, seed=seed, replicates=replicates
        ),
        tag: resampled_estimate(
            len(videos),
            lambda idx: pooled_ap([dets[i] for i in idx]),
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed + 1,
            replicates=replicates,
        ),
    }
