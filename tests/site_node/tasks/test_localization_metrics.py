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
    # two matched pairs; the unmatched grasper truth and the unmatched clipper prediction each count 0
    assert frame_ious(truth, pred) == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert frame_ious(truth, None) == [0.0, 0.0, 0.0]  # an unread answer finds nothing


def test_miou_per_video_and_ap50_hard_pooled() -> None:
    half = B("hook", 0.0, 0.0, 0.5, 1.0)
    v1 = BoxVideo([[B("hook", 0, 0, 1, 1)], [B("hook", 0, 0, 1, 1)]], [[half], None])  # IoU 0.5, then unread
    v2 = BoxVideo([[B("grasper", 0, 0, 0.5, 0.5)]], [[B("grasper", 0, 0, 0.5, 0.5), B("grasper", 0.6, 0.6, 1, 1)]])
    got = summarise([v1, v2], threshold=0.5, seed=3, replicates=200)
    assert set(got) == {"miou", "ap50_hard"}
    # v1: IoU 0.5 and 0 (unread); v2: the matched box 1.0 and the extra grasper prediction 0
    assert got["miou"].estimate == pytest.approx((0.25 + 0.5) / 2)
    # hook: 1 detection, a hit (IoU 0.5), 2 boxes -> P 1, R 1/2; grasper: 2 detections, 1 hit, 1 box -> P 1/2, R 1
    assert got["ap50_hard"].estimate == pytest.approx((0.5 + 0.5) / 2)
    assert got["miou"].parse_fail_rate == pytest.approx(1 / 3) and got["miou"].n_videos == 2
    assert got["ap50_hard"].ci_low <= got["ap50_hard"].estimate <= got["ap50_hard"].ci_high


def _grid(n: int) -> list[B]:
    step = 1.0 / n
    return [B("hook", i * step, j * step, (i + 1) * step, (j + 1) * step) for i in range(n) for j in range(n)]


TRUTH = B("hook", 0.0, 0.0, 1 / 9, 1 / 9)  # exactly one cell of the 9 x 9 grid
HONEST = B("hook", 0.02, 0.02, 1 / 9 + 0.02, 1 / 9 + 0.02)  # the right box, slightly offset


def _iou_by_hand(a: B, b: B) -> float:
    w = max(0.0, min(a.xyxy[2], b.xyxy[2]) - max(a.xyxy[0], b.xyxy[0]))
    h = max(0.0, min(a.xyxy[3], b.xyxy[3]) - max(a.xyxy[1], b.xyxy[1]))
    area = lambda r: (r.xyxy[2] - r.xyxy[0]) * (r.xyxy[3] - r.xyxy[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        # 81 boxes tiling the image: one matches exactly, the other 80 are false positives at IoU 0 -> 1/81
        ([TRUTH], _grid(9), 1.0 / 81),
        # one honest, slightly offset box: its own IoU, (1/9 - 0.02)^2 / (2/81 - (1/9 - 0.02)^2)
        ([TRUTH], [HONEST], (1 / 9 - 0.02) ** 2 / (2 / 81 - (1 / 9 - 0.02) ** 2)),
        # a correct box plus a duplicate: the duplicate is unmatched -> (1 + 0) / 2
        ([TRUTH], [TRUTH, TRUTH], 0.5),
        # nothing predicted for one truth box -> 0
        ([TRUTH], [], 0.0),
        # a box predicted on a frame without instruments -> 0
        ([], [TRUTH], 0.0),
    ],
)
def test_miou_penalises_false_positives(truth: list[B], pred: list[B], expected: float) -> None:
    v = BoxVideo([truth], [pred])
    got = summarise([v, v], threshold=0.5, seed=1, replicates=50)["miou"].estimate
    assert got == pytest.approx(expected, abs=1e-9)


def test_grid_scores_below_the_honest_box() -> None:
    assert _iou_by_hand(TRUTH, HONEST) == pytest.approx(frame_ious([TRUTH], [HONEST])[0], abs=1e-12)
    grid = summarise([BoxVideo([[TRUTH]], [_grid(9)])] * 2, threshold=0.5, seed=1, replicates=50)["miou"]
    honest = summarise([BoxVideo([[TRUTH]], [[HONEST]])] * 2, threshold=0.5, seed=1, replicates=50)["miou"]
    assert grid.estimate < honest.estimate


def test_frames_and_videos_without_boxes_are_skipped_not_nan() -> None:
    empty = BoxVideo([[], []], [[], []])  # a sampled video with no instruments, none predicted
    half = BoxVideo([[B("hook", 0, 0, 1, 1)], []], [[B("hook", 0, 0, 0.5, 1)], []])  # 2nd frame: neither
    got = summarise([empty, half, half], threshold=0.5, seed=1, replicates=50)["miou"]
    assert got.estimate == pytest.approx(0.5)
    assert got.n_videos == 2  # the empty video gives no value
    assert got.n_frames == 2  # frames scored: the frames with neither box are skipped
