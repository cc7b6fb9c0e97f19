"""Action recognition metrics per video (accuracy, macro-F1 over the actions in the video), summarised over videos."""

from __future__ import annotations

from collections.abc import Sequence

from site_node.metrics.bootstrap import Estimate, summarise_videos
from site_node.metrics.phase import video_scores

ACTION_METRICS = ("accuracy", "f1")


def summarise(
    videos: Sequence[tuple[Sequence[str], Sequence[str | None]]], *, seed: int, replicates: int = 1000
) -> dict[str, Estimate]:
    """Per-video accuracy and macro-F1 (the phase convention: classes present in the video's truth; an unread
    answer is wrong for every class), as means over videos with a video-level bootstrap CI."""
    scores = [video_scores(t, p) for t, p in videos]
    n_frames = sum(len(t) for t, _ in videos)
    n_failed = sum(sum(x is None for x in p) for _, p in videos)
    return {
        name: summarise_videos([getattr(s, name) for s in scores], n_frames=n_frames, n_failed=n_failed,
                               seed=seed + i, replicates=replicates)
        for i, name in enumerate(ACTION_METRICS)
    }
