"""Video-level (cluster) bootstrap: resample videos with replacement, seeded from the protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A metric summarised over videos; only these numbers ever leave the site."""

    estimate: float
    ci_low: float
    ci_high: float
    n_videos: int
    n_frames: int
    parse_fail_rate: float
    sd: float = float("nan")


def cluster_bootstrap_ci(
    per_video: Sequence[float],
    *,
    seed: int,
    replicates: int = 1000,
    statistic: Callable[[np.ndarray], float] = lambda x: float(np.mean(x)),
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile CI of `statistic` over videos resampled with replacement."""
    values = np.asarray(per_video, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(replicates, values.size))
    stats = np.array([statistic(values[row]) for row in idx]) if values.ndim > 1 else values[idx].mean(axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarise_videos(
    per_video: Sequence[float], *, n_frames: int, n_failed: int, seed: int, replicates: int = 1000
) -> Estimate:
    """Mean over videos with its cluster-bootstrap 95% CI and the SD over videos."""
    values = np.asarray(per_video, dtype=float)
    low, high = cluster_bootstrap_ci(values, seed=seed, replicates=replicates)
    return Estimate(
        estimate=float(values.mean()) if values.size else float("nan"),
        ci_low=low,
        ci_high=high,
        n_videos=int(values.size),
        n_frames=n_frames,
        parse_fail_rate=n_failed / n_frames if n_frames else float("nan"),
        sd=float(values.std(ddof=1)) if values.size > 1 else float("nan"),
    )
