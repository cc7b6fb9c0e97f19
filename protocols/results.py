"""The tidy per-site results schema shared by the hub's store and `reports`, and the pooling-scale rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum

import numpy as np


class Role(str, Enum):
    """What a center did in a round."""

    EVALUATE = "evaluate"  # external validation only
    TRAIN = "train"  # trained the adapter and evaluated it
    HELD_OUT = "held_out"  # never trained in a fine-tuning study


class PoolingScale(str, Enum):
    """The scale a metric's SE is released on and pooled on: logit for metrics bounded in [0, 1]."""

    IDENTITY = "identity"
    LOGIT = "logit"

    @property
    def code(self) -> int:
        """Its number on the wire (Flower's MetricRecord carries numbers only)."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> PoolingScale:
        for scale, c in _CODES.items():
            if c == code:
                return scale
        raise ValueError(f"unknown pooling scale code {code!r}; expected one of {sorted(_CODES.values())}")


_CODES = {PoolingScale.IDENTITY: 0, PoolingScale.LOGIT: 1}


def edge(n_videos: int) -> float:
    """How far inside (0, 1) a proportion is moved before the logit: the Haldane value 0.5/(n + 1), n = videos."""
    return 0.5 / (max(int(n_videos), 1) + 1.0)


def to_pooling_scale(p: np.ndarray, n_videos: int, scale: PoolingScale) -> np.ndarray:
    """Values on the pooling scale. Logit: a value of exactly 0 or 1 becomes the Haldane-Anscombe value
    (x + 0.5)/(n + 1), n = videos, i.e. it moves edge(n) inside; never further in than the most extreme value
    inside (0, 1) among those given, so the order of bootstrap replicates is kept. Values inside stay as they are."""
    x = np.asarray(p, dtype=float)
    if scale is PoolingScale.IDENTITY:
        return x
    e = edge(n_videos)
    inside = x[(x > 0.0) & (x < 1.0)]
    if inside.size:
        e = min(e, float(inside.min()), float(1.0 - inside.max()))
    q = np.clip(x, e, 1.0 - e)
    return np.log(q / (1.0 - q))


def floor_se(p: float, n_videos: int, scale: PoolingScale) -> float:
    """The SE used when the bootstrap shows no spread (a CI of zero width): a binomial SE with n = videos.

    Logit: sqrt(1/(x + 0.5) + 1/(n - x + 0.5)), x = p n (the Haldane-Anscombe empirical logit); identity:
    sqrt(q (1 - q) / n) with q = p moved inside by edge(n).
    """
    n = max(int(n_videos), 1)
    if scale is PoolingScale.LOGIT:
        x = min(max(p, 0.0), 1.0) * n
        return math.sqrt(1.0 / (x + 0.5) + 1.0 / (n - x + 0.5))
    q = min(max(p, edge(n)), 1.0 - edge(n))
    return math.sqrt(q * (1.0 - q) / n)


@dataclass(frozen=True)
class ResultRow:
    """One number released by one center: a task's metric with its 95% CI, pooling SE and provenance."""

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
    se_pooling: float | None = None  # the site's SE on pooling_scale (None from sites before contract 2)
    pooling_scale: str | None = None  # PoolingScale value
    undefined_share: float | None = None  # share of bootstrap replicates where the metric was undefined


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
# Columns a results table may lack (tables written before they existed); validation adds them empty.
OPTIONAL: tuple[str, ...] = ("se_pooling", "pooling_scale", "undefined_share")
NULLABLE: frozenset[str] = frozenset(
    {"estimate", "ci_low", "ci_high", "n_videos", "n_frames", "parse_fail_rate", *OPTIONAL}
)
