"""Per task and metric: each center's contribution on the analysis scale, the pooled row, and footnotes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from protocols.errors import DataError
from protocols.tasks import Scale
from reports.frame import POOLED, POOLED_COLUMNS, first_seen
from reports.pooling import MetaResult, expit, haldane, haldane_logit_se, logit, random_effects, se_from_ci
from reports.taskinfo import TaskInfo

CORRECTION_TEXT = (
    "A proportion (estimate or CI bound) of exactly 0 or 1 is replaced by the Haldane-Anscombe value "
    "(x + 0.5)/(n + 1), x = p·n, with n the frames scored (videos when frames are not reported); "
    "when the CI then has zero width, the SE is the binomial one of that empirical logit, "
    "√(1/(x + 0.5) + 1/(n − x + 0.5))."
)


@dataclass(frozen=True)
class Contribution:
    """One center's number on the analysis scale, or why it is not pooled."""

    center: str
    y: float | None
    se: float | None
    reason: str | None  # why it is left out of the pooling
    corrected: bool = False  # the 0/1 correction was applied


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


def _count(row: pd.Series) -> int | None:
    for col in ("n_frames", "n_videos"):
        value = row[col]
        if not pd.isna(value) and int(value) > 0:
            return int(value)
    return None


def _logit_contribution(row: pd.Series, est: float, lo: float, hi: float) -> Contribution:
    where = f"center {row['center']!r}, task {row['task']!r}, metric {row['metric']!r}"
    for name, value in (("estimate", est), ("ci_low", lo), ("ci_high", hi)):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{where}: {name} {value!r} is not a proportion in [0, 1]")
    at_edge = any(v in (0.0, 1.0) for v in (est, lo, hi))
    n = _count(row)
    if at_edge and n is None:
        raise DataError(f"{where}: a value at 0 or 1 needs n_frames or n_videos for the continuity correction")
    fix: Callable[[float], float] = (lambda p: haldane(p, n)) if n is not None else (lambda p: p)
    y = logit(fix(est))
    se = se_from_ci(logit(fix(lo)), logit(fix(hi)))
    if se <= 0.0:
        if n is None:
            raise DataError(f"{where}: zero-width CI [{lo}, {hi}] and no n_frames/n_videos for a binomial SE")
        se = haldane_logit_se(est, n)
    return Contribution(str(row["center"]), y, se, None, corrected=at_edge)


def contribution(row: pd.Series, scale: Scale) -> Contribution:
    """The center's effect and SE on the analysis scale (logit for proportions)."""
    center = str(row["center"])
    if bool(row["suppressed"]):
        return Contribution(center, None, None, "suppressed by the site's release gate (small cell)")
    est, lo, hi = (float(row[c]) for c in ("estimate", "ci_low", "ci_high"))
    if math.isnan(est):
        return Contribution(center, None, None, "no estimate released")
    if math.isnan(lo) or math.isnan(hi):
        return Contribution(center, None, None, "no 95% CI released")
    if hi < lo:
        raise DataError(f"center {center!r}, metric {row['metric']!r}: ci_high {hi!r} is below ci_low {lo!r}")
    if scale is Scale.PROPORTION:
        return _logit_contribution(row, est, lo, hi)
    se = se_from_ci(lo, hi)
    if se <= 0.0:
        return Contribution(center, None, None, "zero-width 95% CI")
    return Contribution(center, est, se, None)


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
        "parse_fail_rate": math.nan,
        "suppressed": False,
        "pi_low": back("pi_low"),
        "pi_high": back("pi_high"),
        "tau2": r.tau2 if r else math.nan,  # on the analysis scale (see pooling_scale)
        "i2": r.i2 if r else math.nan,
        "fe_estimate": back("fe_estimate"),
        "fe_ci_low": back("fe_ci_low"),
        "fe_ci_high": back("fe_ci_high"),
        "k": len(pooled),
        "method": r.method.value if r else "",
        "pooling_scale": "logit" if pm.scale is Scale.PROPORTION else "identity",
        "weight": 1.0 if r else math.nan,
        "note": _pooled_note(pm),
    }


def _pooled_note(pm: PooledMetric) -> str:
    if pm.result is None:
        return "fewer than 2 centers to pool; no pooled estimate"
    if pm.result.pi_low is None:
        return "fewer than 3 centers; no prediction interval"
    return ""


def per_center_table(pooled: list[PooledMetric], study: str, round_: int) -> pd.DataFrame:
    """The tidy per-center table with a pooled row after each task's metric (the per_center.csv content)."""
    parts: list[pd.DataFrame] = []
    for pm in pooled:
        parts.append(_center_rows(pm))
        parts.append(pd.DataFrame([_pooled_row(pm, study, round_)]))
    columns = [*pm.centers.columns, *POOLED_COLUMNS] if pooled else []
    df = pd.concat(parts, ignore_index=True).reindex(columns=columns)
    for col in ("n_videos", "n_frames", "k"):
        df[col] = df[col].astype("Int64")
    df["suppressed"] = df["suppressed"].astype(bool)
    return df
