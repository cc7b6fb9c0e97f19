"""The tidy per-site results schema shared by the hub's store and `reports`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum


class Role(str, Enum):
    """What a center did in a round."""

    EVALUATE = "evaluate"  # external validation only
    TRAIN = "train"  # trained the adapter and evaluated it
    HELD_OUT = "held_out"  # never trained in a fine-tuning study


@dataclass(frozen=True)
class ResultRow:
    """One number released by one center: a task's metric with its 95% CI and provenance."""

    study: str
    round: int
    center: str
    role: str
    task: str
    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n_videos: int | None
    n_frames: int | None
    parse_fail_rate: float | None
    suppressed: bool


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
NULLABLE: frozenset[str] = frozenset({"estimate", "ci_low", "ci_high", "n_videos", "n_frames", "parse_fail_rate"})
