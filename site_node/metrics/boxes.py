"""Box geometry for localization: IoU of normalised xyxy boxes and one-to-one matching within a class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from site_node.labels import LabelledBox


def iou_matrix(a: Sequence[LabelledBox], b: Sequence[LabelledBox]) -> np.ndarray:
    """Pairwise IoU (len(a) x len(b)) of corner (xyxy) boxes, in float64.

    Not monai.data.box_utils.box_iou: it is the same definition but computes in float32, which puts an IoU of
    exactly 0.5 a hair below the AP@0.5 threshold.
    """
    if not a or not b:
        return np.zeros((len(a), len(b)))
    p, q = np.array([x.xyxy for x in a], dtype=float), np.array([x.xyxy for x in b], dtype=float)
    lo, hi = np.maximum(p[:, None, :2], q[None, :, :2]), np.minimum(p[:, None, 2:], q[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)

    def area(r):
        return (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])

    union = area(p)[:, None] + area(q)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match(truth: Sequence[LabelledBox], pred: Sequence[LabelledBox]) -> list[tuple[int, int, float]]:
    """(truth index, prediction index, IoU) pairs: same label, one-to-one, maximising the total IoU (Hungarian)."""
    pairs = []
    for label in sorted({t.label for t in truth} & {p.label for p in pred}):
        ti = [i for i, t in enumerate(truth) if t.label == label]
        pi = [j for j, p in enumerate(pred) if p.label == label]
        iou = iou_matrix([truth[i] for i in ti], [pred[j] for j in pi])
        rows, cols = linear_sum_assignment(-iou)
        pairs += [(ti[r], pi[c], float(iou[r, c])) for r, c in zip(rows, cols, strict=False) if iou[r, c] > 0]
    return pairs
