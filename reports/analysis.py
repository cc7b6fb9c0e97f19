"""Per task and metric: each center's contribution on the analysis scale, the pooled row, and footnotes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocols.errors import DataError
from protocols.results import OPTIONAL, PoolingScale, floor_se, to_pooling_scale
from protocols.tasks import Scale
from reports.frame import POOLED, POOLED_COLUMNS, first_seen
from reports.pooling import MetaResult, expit, logit, random_effects, se_from_ci
from reports.taskinfo import TaskInfo

CORRECTION_TEXT = (
    "Each center's standard error on the pooling scale is the one the site released (se_pooling: the SD of the "
    "logit-transformed video-level bootstrap replicates, times √(n/(n − 1)), n = videos); for results from sites "
    "that did not release it, it is (upper − lower)/(2 × 1.96) of the CI on the pooling scale. Before the logit, a "
    "proportion is clamped to [0.5/(n + 1), 1 − 0.5/(n + 1)] with n the number of videos (the resampling unit), "
    "which moves exactly 0 or 1 to the Haldane-Anscombe value (x + 0.5)/(n + 1). A CI of zero width is never "
    "excluded: its SE is the binomial one of that empirical logit, √(1/(x + 0.5) + 1/(n − x + 0.5)), x = p·n."
)


@dataclass(frozen=True)
class Contribution:
    """One center's number on the analysis scale, or why it is not pooled."""

    center: str
    y: float | None
    se: float | None
    reason: str | None  # why it is left out of the pooling
    corrected: bool = False  # a value at 0 or 1 was moved inside for the logit
    floored: bool = False  # zero-width CI: the floor SE was used
    from_site: bool = False  # the SE is the site's released se_pooling, not rebuilt from the CI


@dataclass(frozen=True)
class PooledMetric:
    """The pooling of one task's metric over the centers of one round."""

    task: str
    metric: str
    scale: Scale
    centers: pd.DataFrame  # the round's rows for this task and metric, in center order
    contributions: tuple[Contribution, ...]
    result: MetaResult | None

    def back(self, x: float | None) -> float:
        """A value on the analysis scale, back on the metric's own scale."""
        if x is None or not math.isfinite(x):
            return math.nan
        return expit(x) if self.scale is Scale.PROPORTION else x


def pooling_scale(scale: Scale) -> PoolingScale:
    return PoolingScale.LOGIT if scale is Scale.PROPORTION else PoolingScale.IDENTITY


def _videos(row: pd.Series) -> int | None:
    value = row["n_videos"]
    return int(value) if not pd.isna(value) and int(value) > 0 else None


def _on_scale(values: list[float], n: int | None, ps: PoolingScale, where: str) -> list[float]:
    """Values moved to the pooling scale together (so a bound at 0 or 1 keeps its order with the others)."""
    if ps is PoolingScale.IDENTITY:
        return values
    if n is None:
        if any(v in (0.0, 1.0) for v in values):
            raise DataError(f"{where}: a value at 0 or 1 needs n_videos for the continuity correction")
        return [logit(v) for v in values]
    return [float(x) for x in to_pooling_scale(np.array(values), n, ps)]


def _released_se(row: pd.Series) -> float | None:
    se = row.get("se_pooling")
    return float(se) if se is not None and not pd.isna(se) and float(se) > 0 else None


def contribution(row: pd.Series, scale: Scale) -> Contribution:
    """The center's effect and SE on the analysis scale (logit for proportions)."""
    center = str(row["center"])
    where = f"center {center!r}, task {row['task']!r}, metric {row['metric']!r}"
    if bool(row["suppressed"]):
        return Contribution(center, None, None, "suppressed by the site's release gate (small cell or undefined)")
    est, lo, hi = (float(row[c]) for c in ("estimate", "ci_low", "ci_high"))
    if math.isnan(est):
        return Contribution(center, None, None, "no estimate released")
    ps, n = pooling_scale(scale), _videos(row)
    values = [("estimate", est)] + [(k, v) for k, v in (("ci_low", lo), ("ci_high", hi)) if not math.isnan(v)]
    if ps is PoolingScale.LOGIT:
        for name, value in values:
            if not 0.0 <= value <= 1.0:
                raise DataError(f"{where}: {name} {value!r} is not a proportion in [0, 1]")
    at_edge = ps is PoolingScale.LOGIT and est in (0.0, 1.0)
    released = _released_se(row)
    if released is not None:
        if str(row.get("pooling_scale")) != ps.value:
            return Contribution(
                center, None, None, f"SE released on the {row.get('pooling_scale')} scale, not {ps.value}"
            )
        return Contribution(
            center, _on_scale([est], n, ps, where)[0], released, None, corrected=at_edge, from_site=True
        )
    if math.isnan(lo) or math.isnan(hi):
        return Contribution(center, None, None, "no 95% CI released")
    if hi < lo:
        raise DataError(f"{where}: ci_high {hi!r} is below ci_low {lo!r}")
    y, t_lo, t_hi = _on_scale([est, lo, hi], n, ps, where)
    se = se_from_ci(t_lo, t_hi)
    if se > 0.0:
        return Contribution(center, y, se, None, corrected=at_edge)
    if n is None:
        raise DataError(f"{where}: zero-width CI [{lo}, {hi}] and no n_videos for the floor SE")
    return Contribution(center, y, floor_se(est, n, ps), None, corrected=at_edge, floored=True)


def pool_metric(rows: pd.DataFrame, task: str, metric: str, scale: Scale, *, hartung_knapp: bool) -> PooledMetric:
    """Pool one task's metric over the given center rows (suppressed and CI-less rows are left out)."""
    contributions = tuple(contribution(r, scale) for _, r in rows.iterrows())
    usable = [(c.y, c.se) for c in contributions if c.y is not None and c.se is not None]
    result = None
    if len(usable) >= 2:
        ys, ses = zip(*usable, strict=True)
        result = random_effects(ys, ses, hartung_knapp=hartung_knapp)
    return PooledMetric(task, metric, scale, rows.reset_index(drop=True), contributions, result)


def analyse(
    round_rows: pd.DataFrame, infos: Mapping[str, TaskInfo], *, hartung_knapp: bool = False
) -> list[PooledMetric]:
    """Every task's metrics pooled, tasks in order of first appearance, metrics headline first."""
    out: list[PooledMetric] = []
    centers = first_seen(round_rows["center"])
    for task in first_seen(round_rows["task"]):
        info = infos[task]
        task_rows = round_rows[round_rows["task"] == task]
        for metric in first_seen(task_rows["metric"]):
            info.scale(task, metric)  # fails loudly on a metric the task does not define
        for metric in info.ordered(task_rows["metric"]):
            rows = task_rows[task_rows["metric"] == metric]
            rows = rows.sort_values("center", key=lambda s: s.map(centers.index), kind="stable")
            out.append(pool_metric(rows, task, metric, info.scales[metric], hartung_knapp=hartung_knapp))
    return out


def _center_rows(pm: PooledMetric) -> pd.DataFrame:
    df = pm.centers.copy()
    weights = (
        dict(zip([c.center for c in pm.contributions if c.reason is None], pm.result.weights, strict=False))
        if pm.result
        else {}
    )
    df["weight"] = [weights.get(c, math.nan) for c in df["center"]]
    notes = []
    for c in pm.contributions:
        if c.reason:
            notes.append(f"{c.reason}; not pooled")
        elif c.floored:
            notes.append("zero-width CI; pooled with the binomial floor SE (n = videos)")
        elif c.corrected:
            notes.append("value at 0 or 1; continuity-corrected for pooling")
        else:
            notes.append("")
    df["note"] = notes
    return df


def _pooled_row(pm: PooledMetric, study: str, round_: int) -> dict[str, object]:
    r = pm.result
    pooled = pm.centers[[c.reason is None for c in pm.contributions]]

    def back(attr: str) -> float:
        return pm.back(getattr(r, attr)) if r else math.nan

    return {
        "study": study,
        "round": round_,
        "center": POOLED,
        "role": "",
        "task": pm.task,
        "metric": pm.metric,
        "estimate": back("estimate"),
        "ci_low": back("ci_low"),
        "ci_high": back("ci_high"),
        "n_videos": pooled["n_videos"].sum(min_count=1),
        "n_frames": pooled["n_frames"].sum(min_count=1),
        "parse_fail_rate": pooled_parse_fail_rate(pm.centers),
        "suppressed": False,
        "se_pooling": r.se if r else math.nan,
        "undefined_share": math.nan,
        "pi_low": back("pi_low"),
        "pi_high": back("pi_high"),
        "tau2": r.tau2 if r else math.nan,  # on the analysis scale (see pooling_scale)
        "i2": r.i2 if r else math.nan,
        "fe_estimate": back("fe_estimate"),
        "fe_ci_low": back("fe_ci_low"),
        "fe_ci_high": back("fe_ci_high"),
        "k": len(pooled),
        "method": r.method.value if r else "",
        "pooling_scale": pooling_scale(pm.scale).value,
        "weight": 1.0 if r else math.nan,
        "note": _pooled_note(pm),
    }


def _pooled_note(pm: PooledMetric) -> str:
    if pm.result is None:
        return "fewer than 2 centers to pool; no pooled estimate"
    if pm.result.k == 2:
        return "only 2 centers: read the pooled estimate with caution (τ² is barely estimable); no prediction interval"
    if pm.result.pi_low is None:
        return "fewer than 3 centers; no prediction interval"
    return ""


def pooled_parse_fail_rate(centers: pd.DataFrame) -> float:
    """The share of unparseable answers over all centers' frames (each center's rate weighted by its frames)."""
    ok = centers["parse_fail_rate"].notna() & centers["n_frames"].notna()
    frames = centers.loc[ok, "n_frames"].astype(float)
    if frames.sum() <= 0:
        return math.nan
    return float((centers.loc[ok, "parse_fail_rate"].astype(float) * frames).sum() / frames.sum())


def per_center_table(pooled: list[PooledMetric], study: str, round_: int) -> pd.DataFrame:
    """The tidy per-center table with a pooled row after each task's metric (the per_center.csv content)."""
    parts: list[pd.DataFrame] = []
    for pm in pooled:
        parts.append(_center_rows(pm))
        parts.append(pd.DataFrame([_pooled_row(pm, study, round_)]))
    columns = list(dict.fromkeys([*pm.centers.columns, *OPTIONAL, *POOLED_COLUMNS])) if pooled else []
    df = pd.concat(parts, ignore_index=True).reindex(columns=columns)
    for col in ("n_videos", "n_frames", "k"):
        df[col] = df[col].astype("Int64")
    df["suppressed"] = df["suppressed"].astype(bool)
    return df
