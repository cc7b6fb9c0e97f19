"""Action recognition metrics per video (accuracy, macro-F1 over the actions in the video), summarised over videos."""

from __future__ import annotations

from collections.abc import Sequence

from site_node.metrics.bootstrap import Estimate
from site_node.metrics.phase import summarise as phase_summarise

ACTION_METRICS = ("accuracy", "f1")


def summarise(
    videos: Sequence[tuple[Sequence[str], Sequence[str | None]]], *, seed: int, replicates: int = 1000
) -> dict[str, Estimate]:
    """Per-video accuracy and macro-F1 (the phase convention: classes present in the video's truth; an unread
    answer is wrong for every class), as means over videos with a video-level bootstrap CI."""
    return phase_summarise(videos, seed=seed, replicates=replicates, metrics=ACTION_METRICS)
