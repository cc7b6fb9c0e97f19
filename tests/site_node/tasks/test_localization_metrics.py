"""Box IoU, one-to-one matching within a label, mIoU of matched boxes and AP@0.5 on hard predictions."""

from __future__ import annotations

import pytest

from site_node.labels import LabelledBox as B
from site_node.metrics.boxes import iou_matrix, match
from site_node.metrics.localization import BoxVideo, frame_ious, summarise


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        (B("hook", 0, 0, 0.5, 0.5), B("hook", 0, 0, 0.5, 0.5), 1.0),
        (B("hook", 0, 0, 0.5, 0.5), B("hook", 0.25, 0.25, 0.75, 0.75), 0.0625 / 0.4375),
        (B("hook", 0, 0, 0.5, 0.5), B("hook", 0.5, 0.5, 1, 1), 0.0),
        (B("hook", 0, 0, 1, 1), B("hook", 0, 0, 0.5, 1), 0.5),
    ],
)
def test_iou(a: B, b: B, iou: float) -> None:
    assert iou_matrix([a], [b])[0, 0] == pytest.approx(iou, abs=1e-6)


def test_matching_is_one_to_one_within_a_label() -> None:
    truth = [B("hook", 0, 0, 0.4, 0.4), B("hook", 0.5, 0.5, 0.9, 0.9), B("grasper", 0, 0, 0.4, 0.4)]
    pred = [B("hook", 0.5, 0.5, 0.9, 0.9), B("hook", 0, 0, 0.4, 0.4), B("clipper", 0, 0, 0.4, 0.4)]
    pairs = sorted(match(truth, pred))
    assert [(t, p) for t, p, _ in pairs] == [(0, 1), (1, 0)]  # the grasper has no grasper to match
    assert frame_ious(truth, pred) == pytest.approx([1.0, 1.0, 0.0])
    assert frame_ious(truth, None) == [0.0, 0.0, 0.0]  # an unread answer finds nothing


def test_miou_per_video_and_ap50_hard_pooled() -> None:
    half = B("hook", 0.0, 0.0, 0.5, 1.0)
    v1 = BoxVideo([[B("hook", 0, 0, 1, 1)], [B("hook", 0, 0, 1, 1)]], [[half], None])  # IoU 0.5, then unread
    v2 = BoxVideo([[B("grasper", 0, 0, 0.5, 0.5)]], [[B("grasper", 0, 0, 0.5, 0.5), B("grasper", 0.6, 0.6, 1, 1)]])
    got = summarise([v1, v2], threshold=0.5, seed=3, replicates=200)
    assert set(got) == {"miou", "ap50_hard"}
    assert got["miou"].estimate == pytest.approx((0.25 + 1.0) / 2)
    # hook: 1 detection, a hit (IoU 0.5), 2 boxes -> P 1, R 1/2; grasper: 2 detections, 1 hit, 1 box -> P 1/2, R 1
    assert got["ap50_hard"].estimate == pytest.approx((0.5 + 0.5) / 2)
    assert got["miou"].parse_fail_rate == pytest.approx(1 / 3) and got["miou"].n_videos == 2
    assert got["ap50_hard"].ci_low <= got["ap50_hard"].estimate <= got["ap50_hard"].ci_high
