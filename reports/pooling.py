"""Pure meta-analysis functions: fixed effect, DerSimonian-Laird, Hartung-Knapp, prediction interval, logit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats

from protocols.errors import DataError

LEVEL = 0.95
Z975: float = float(stats.norm.ppf(0.975))  # 1.959964..., the two-sided 95% normal quantile


class Method(str, Enum):
    """How the random-effects mean's standard error and CI are computed."""

    DL = "DerSimonian-Laird"
    DL_HK = "DerSimonian-Laird with Hartung-Knapp"


@dataclass(frozen=True)
class MetaResult:
    """A pooled estimate on the analysis scale (logit for proportions, identity otherwise)."""

    k: int
    method: Method
    estimate: float  # random-effects mean
    se: float
    ci_low: float
    ci_high: float
    fe_estimate: float  # fixed-effect (inverse-variance) mean
    fe_se: float
    fe_ci_low: float
    fe_ci_high: float
    q: float  # Cochran's Q
    tau2: float  # DL between-center variance, truncated at 0
    i2: float  # Higgins' I-squared as a fraction in [0, 1]
    pi_low: float | None  # 95% prediction interval; None when k < 3
    pi_high: float | None
    weights: tuple[float, ...]  # relative random-effects weights, summing to 1


def logit(p: float) -> float:
    """log(p / (1 - p)); p must lie strictly inside (0, 1)."""
    if not 0.0 < p < 1.0:
        raise DataError(f"logit needs a proportion strictly inside (0, 1), got {p!r}")
    return math.log(p / (1.0 - p))


def expit(x: float) -> float:
    """The inverse of logit, stable for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def haldane(p: float, n: int) -> float:
    """Move a proportion of exactly 0 or 1 inside (0, 1): (x + 0.5) / (n + 1) with x = p * n."""
    if n < 1:
        raise DataError(f"the 0/1 continuity correction needs a positive count, got n={n!r}")
    if p in (0.0, 1.0):
        return (p * n + 0.5) / (n + 1.0)
    return p


def haldane_logit_se(p: float, n: int) -> float:
    """Binomial SE of the Haldane-Anscombe empirical logit: sqrt(1/(x+0.5) + 1/(n-x+0.5))."""
    x = p * n
    return math.sqrt(1.0 / (x + 0.5) + 1.0 / (n - x + 0.5))


def se_from_ci(low: float, high: float) -> float:
    """Standard error implied by a symmetric 95% CI on the analysis scale: (high - low) / (2 * 1.96)."""
    if high < low:
        raise DataError(f"CI upper bound {high!r} is below its lower bound {low!r}")
    return (high - low) / (2.0 * Z975)


def fixed_effect(y: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Inverse-variance weighted mean and its standard error."""
    w = 1.0 / var
    return float((w * y).sum() / w.sum()), float(math.sqrt(1.0 / w.sum()))


def dersimonian_laird(y: np.ndarray, var: np.ndarray) -> tuple[float, float, float]:
    """(tau2, Q, I2): DL moment estimate truncated at 0, Cochran's Q, and I2 = max(0, (Q - df) / Q)."""
    w = 1.0 / var
    mu_fe = (w * y).sum() / w.sum()
    q = float((w * (y - mu_fe) ** 2).sum())
    df = len(y) - 1
    c = w.sum() - (w**2).sum() / w.sum()
    tau2 = max(0.0, (q - df) / c) if c > 0 else 0.0
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return float(tau2), q, float(i2)


def hartung_knapp_se(y: np.ndarray, var: np.ndarray, tau2: float, mu: float, *, ad_hoc: bool = True) -> float:
    """Hartung-Knapp(-Sidik-Jonkman) SE of the random-effects mean: sqrt(q / sum w), q = sum w (y - mu)^2 / (k - 1).

    With `ad_hoc` (the default) q is replaced by max(1, q) (Knapp-Hartung ad hoc correction, metafor's
    test="knha" with the ad hoc option), so the interval is never narrower than the DL one's SE.
    """
    w = 1.0 / (var + tau2)
    q = float((w * (y - mu) ** 2).sum() / (len(y) - 1))
    return float(math.sqrt((max(1.0, q) if ad_hoc else q) / w.sum()))


def prediction_interval(mu: float, se: float, tau2: float, k: int) -> tuple[float, float] | None:
    """Higgins-Thompson-Spiegelhalter 95% PI: mu -/+ t(k-2) * sqrt(tau2 + se^2); None when k < 3."""
    if k < 3:
        return None
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 2)) * math.sqrt(tau2 + se**2)
    return mu - half, mu + half


def random_effects(y: Sequence[float], se: Sequence[float], *, hartung_knapp: bool = False) -> MetaResult:
    """Pool k >= 2 effects with their SEs: DL random effects (optionally HK), fixed effect, PI."""
    ya, va = _checked(y, se)
    k = len(ya)
    fe, fe_se = fixed_effect(ya, va)
    tau2, q, i2 = dersimonian_laird(ya, va)
    w = 1.0 / (va + tau2)
    mu = float((w * ya).sum() / w.sum())
    if hartung_knapp:
        re_se, crit = hartung_knapp_se(ya, va, tau2, mu), float(stats.t.ppf(0.5 + LEVEL / 2, k - 1))
    else:
        re_se, crit = float(math.sqrt(1.0 / w.sum())), Z975
    pi = prediction_interval(mu, re_se, tau2, k)
    return MetaResult(
        k=k,
        method=Method.DL_HK if hartung_knapp else Method.DL,
        estimate=mu,
        se=re_se,
        ci_low=mu - crit * re_se,
        ci_high=mu + crit * re_se,
        fe_estimate=fe,
        fe_se=fe_se,
        fe_ci_low=fe - Z975 * fe_se,
        fe_ci_high=fe + Z975 * fe_se,
        q=q,
        tau2=tau2,
        i2=i2,
        pi_low=None if pi is None else pi[0],
        pi_high=None if pi is None else pi[1],
        weights=tuple(float(x) for x in w / w.sum()),
    )


def _checked(y: Sequence[float], se: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=float)
    sa = np.asarray(se, dtype=float)
    if ya.shape != sa.shape or ya.ndim != 1:
        raise DataError(f"expected equal-length 1-D effects and SEs, got shapes {ya.shape} and {sa.shape}")
    if len(ya) < 2:
        raise DataError(f"random-effects pooling needs at least 2 centers, got {len(ya)}")
    if not (np.all(np.isfinite(ya)) and np.all(np.isfinite(sa)) and np.all(sa > 0)):
        raise DataError(f"effects must be finite and SEs finite and positive, got y={ya.tolist()}, se={sa.tolist()}")
    return ya, sa**2
