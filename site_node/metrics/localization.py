"""Localization metrics: mIoU of one-to-one matched boxes per video (extra boxes cost), AP@0.5 over the frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from site_node.labels import LabelledBox
from site_node.metrics.bootstrap import Estimate, bootstrap_estimate, summarise_videos
from site_node.metrics.boxes import match
from site_node.metrics.triplet import average_precision

Boxes = list[LabelledBox] | None  # None: the answer could not be read


@dataclass(frozen=True)
class BoxVideo:
    truth: list[list[LabelledBox]]
    pred: list[Boxes]


def frame_ious(truth: Sequence[LabelledBox], pred: Boxes) -> list[float]:
    """One IoU per box of the frame's one-to-one matching (same label, Hungarian): each matched pair its IoU,
    each unmatched ground truth and each unmatched prediction 0. A frame with neither gives no value (skipped);
    an unreadable answer is wrong: 0 for each ground-truth box, or one 0 when the frame has none."""
    if pred is None:
        return [0.0] * max(len(truth), 1)
    pairs = match(truth, pred)
    return [iou for _, _, iou in pairs] + [0.0] * (len(truth) + len(pred) - 2 * len(pairs))


def video_miou(v: BoxVideo) -> float:
    """Mean IoU over all the video's boxes (as frame_ious counts them); NaN when no frame has any box."""
    values = [iou for t, p in zip(v.truth, v.pred, strict=False) for iou in frame_ious(t, p)]
    return float(np.mean(values)) if values else float("nan")


def scored_frames(v: BoxVideo) -> int:
    """Frames that count for mIoU: those with a ground-truth or predicted box, or an unreadable answer."""
    return sum(1 for t, p in zip(v.truth, v.pred, strict=False) if t or p is None or p)


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
    """mIoU as the mean over videos with boxes; AP@threshold on hard predictions (text boxes carry no confidence).

    n_frames of mIoU counts the frames scored: frames with neither a ground-truth nor a predicted box are skipped.
    """
    n_frames = sum(len(v.truth) for v in videos)
    n_failed = sum(p is None for v in videos for p in v.pred)
    tag = f"ap{round(threshold * 100)}_hard"
    dets = [detections(v, threshold) for v in videos]  # matched once; the bootstrap only regroups them
    has_truth = [int(any(t for t in v.truth)) for v in videos]
    return {
        "miou": summarise_videos(
            [video_miou(v) for v in videos],
            n_frames=sum(scored_frames(v) for v in videos),
            n_failed=n_failed,
            seed=seed,
            replicates=replicates,
        ),
        tag: bootstrap_estimate(
            len(videos),
            lambda idx: pooled_ap([dets[i] for i in idx]),
            n_frames=n_frames,
            n_failed=n_failed,
            seed=seed + 1,
            replicates=replicates,
            strata=has_truth,
        ),
    }
