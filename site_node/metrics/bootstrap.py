"""Video-level (cluster) bootstrap with a small-sample t interval on the pooling scale, seeded from the protocol."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from protocols.results import PoolingScale, floor_se, to_pooling_scale

LEVEL = 0.95
# Fewer defined replicates than this share and no interval is released (the share undefined always is).
MIN_DEFINED = 0.5


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
    se_pooling: float = float("nan")  # SE on `pooling_scale`, from the bootstrap replicates
    pooling_scale: PoolingScale = PoolingScale.LOGIT
    undefined_share: float = 0.0  # share of bootstrap replicates on which the metric was undefined
    se_floored: bool = False  # the replicates had no spread: the stated floor SE was used


def resample_indices(n: int, *, seed: int, replicates: int, strata: Sequence[int] | None = None) -> np.ndarray:
    """(replicates, n) video indices drawn with replacement, within each stratum when strata are given.

    Stratifying keeps each stratum's size, so a resample always holds the videos with positives when they are few.
    """
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(replicates, n))
    groups = np.asarray(strata)
    if groups.shape != (n,):
        raise ValueError(f"expected one stratum per video ({n}), got {groups.shape}")
    parts = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        parts.append(members[rng.integers(0, members.size, size=(replicates, members.size))])
    return np.concatenate(parts, axis=1)


def replicate_values(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int,
    replicates: int,
    strata: Sequence[int] | None = None,
) -> np.ndarray:
    """The statistic on each resample of videos; NaN where it is undefined (e.g. no positive drawn)."""
    idx = resample_indices(n, seed=seed, replicates=replicates, strata=strata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([statistic(row) for row in idx], dtype=float)


def interval(
    estimate: float, reps: np.ndarray, n_videos: int, scale: PoolingScale = PoolingScale.LOGIT
) -> tuple[float, float, float, float, bool]:
    """(ci_low, ci_high, se_pooling, undefined share, floored) from the bootstrap replicates.

    SE = SD of the replicates on the pooling scale x sqrt(n/(n-1)) (the bootstrap variance of a mean is (n-1)/n of
    the usual one); CI = estimate +/- t(n-1) x SE on that scale, back-transformed. No spread: the floor SE.
    """
    reps = np.asarray(reps, dtype=float)
    defined = reps[np.isfinite(reps)]
    undefined = 1.0 - defined.size / reps.size if reps.size else 1.0
    nan = float("nan")
    if n_videos < 2 or not math.isfinite(estimate) or defined.size < max(2, MIN_DEFINED * reps.size):
        return nan, nan, nan, undefined, False
    tr = to_pooling_scale(defined, n_videos, scale)
    se = float(np.std(tr, ddof=1)) * math.sqrt(n_videos / (n_videos - 1))
    floored = not se > 1e-12
    if floored:
        se = floor_se(estimate, n_videos, scale)
    centre = float(to_pooling_scale(np.array([estimate]), n_videos, scale)[0])
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n_videos - 1)) * se
    lo, hi = centre - half, centre + half
    if scale is PoolingScale.LOGIT:
        lo, hi = 1.0 / (1.0 + math.exp(-lo)), 1.0 / (1.0 + math.exp(-hi))
    # A value at 0 or 1 is moved inside for the logit; the reported interval still contains the estimate.
    return min(lo, estimate), max(hi, estimate), se, undefined, floored


def bootstrap_estimate(
    n_videos: int,
    statistic: Callable[[np.ndarray], float],
    *,
    n_frames: int,
    n_failed: int,
    seed: int,
    replicates: int,
    strata: Sequence[int] | None = None,
    sd: float = float("nan"),
    scale: PoolingScale = PoolingScale.LOGIT,
) -> Estimate:
    """A statistic of all videos (it gets video indices) with its video-level bootstrap interval and pooling SE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. AP of a class with no positive
        estimate = float(statistic(np.arange(n_videos))) if n_videos else float("nan")
    reps: np.ndarray = (
        replicate_values(n_videos, statistic, seed=seed, replicates=replicates, strata=strata)
        if n_videos
        else np.zeros(0)
    )
    lo, hi, se, undefined, floored = interval(estimate, reps, n_videos, scale)
    return Estimate(
        estimate,
        lo,
        hi,
        n_videos,
        n_frames,
        n_failed / n_frames if n_frames else float("nan"),
        sd,
        se,
        scale,
        undefined,
        floored,
    )


def summarise_videos(
    per_video: Sequence[float], *, n_frames: int, n_failed: int, seed: int, replicates: int = 1000
) -> Estimate:
    """Mean over the videos where the metric is defined, with its interval and the SD over videos."""
    values = np.asarray(per_video, dtype=float)
    values = values[np.isfinite(values)]
    return bootstrap_estimate(
        int(values.size),
        lambda idx: float(values[idx].mean()),
        n_frames=n_frames,
        n_failed=n_failed,
        seed=seed,
        replicates=replicates,
        sd=float(values.std(ddof=1)) if values.size > 1 else float("nan"),
    )
