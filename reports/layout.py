"""Format-neutral tables (cells as text, footnotes) built from the per-center table; renderers draw them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import SupportsFloat, cast

import pandas as pd

from reports.arena import ArenaScore
from reports.frame import POOLED, first_seen
from reports.taskinfo import TaskInfo

DASH = "—"  # an empty cell
SUPPRESSED = "suppressed"
ROLE_WORDS = {"evaluate": "evaluation", "train": "trainer", "held_out": "held-out", "": ""}


@dataclass
class Table:
    """A titled grid of text cells; rows from `pooled_from` on are summary rows set off by a rule."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    pooled_from: int | None = None
    footnotes: list[str] = field(default_factory=list)
    left: int = 1  # how many leading (text) columns are left-aligned; the rest are numbers


def missing(x: object) -> bool:
    """None, NaN or pandas NA."""
    return x is None or bool(pd.isna(x))


def _float(x: object) -> float:
    """A table cell's number (a float, int, numpy or pandas scalar) as a float."""
    return float(cast(SupportsFloat, x))


def num(x: object, digits: int = 3) -> str:
    """A number with a fixed number of decimals, or a dash when missing."""
    return DASH if missing(x) else f"{_float(x):.{digits}f}"


def small(x: object) -> str:
    """tau-squared: 3 decimals, but '<0.001' rather than a misleading 0.000 for tiny positive values."""
    if missing(x):
        return DASH
    value = _float(x)
    return "<0.001" if 0.0 < value < 0.0005 else f"{value:.3f}"


def pct(x: object) -> str:
    return DASH if missing(x) else f"{100.0 * _float(x):.1f}%"


def interval(est: object, lo: object, hi: object) -> str:
    """'0.912 (0.880–0.940)'; the CI is left out when it was not released."""
    if missing(est):
        return DASH
    if missing(lo) or missing(hi):
        return num(est)
    return f"{num(est)} ({span(lo, hi)})"


def span(lo: object, hi: object) -> str:
    """'0.880–0.940'; 'a to b' once a bound is negative, where a dash would read as a minus sign."""
    if missing(lo) or missing(hi):
        return DASH
    sep = " to " if _float(lo) < 0 or _float(hi) < 0 else "–"
    return f"{num(lo)}{sep}{num(hi)}"


def cell(row: pd.Series | None) -> str:
    if row is None:
        return DASH
    if bool(row["suppressed"]):
        return SUPPRESSED
    return interval(row["estimate"], row["ci_low"], row["ci_high"])


def count(x: object) -> str:
    return DASH if missing(x) else str(int(_float(x)))


def _lookup(df: pd.DataFrame, center: str, metric: str) -> pd.Series | None:
    hit = df[(df["center"] == center) & (df["metric"] == metric)]
    return None if hit.empty else hit.iloc[0]


def _footnotes(df: pd.DataFrame, metrics: list[str]) -> list[str]:
    """One footnote per (center, note), naming the metrics unless it concerns all of them."""
    notes: dict[tuple[str, str], list[str]] = {}
    for _, r in df[df["note"].fillna("") != ""].iterrows():
        notes.setdefault((str(r["center"]), str(r["note"])), []).append(str(r["metric"]))
    out = []
    for (center, note), which in notes.items():
        scope = "" if sorted(which) == sorted(metrics) else f" ({', '.join(which)})"
        out.append(f"{center}{scope}: {note}.")
    return out


SMALL_N = 10  # fewer videos than this: the interval rests on very few clusters, flagged in the tables
SENSITIVITY_SUFFIX = "_parseable"


def _videos_cell(x: object) -> str:
    return f"{count(x)}†" if not missing(x) and _float(x) < SMALL_N else count(x)


def task_table(df: pd.DataFrame, task: str, info: TaskInfo, method: str) -> Table:
    """Centers as rows, 'estimate (95% CI)' per metric, the parse-failure rate, the pooled row last."""
    metrics = [m for m in info.ordered(df["metric"]) if not m.endswith(SENSITIVITY_SUFFIX)]
    head = [*["Center", "Role", "Videos", "Frames", "Unparseable"], *[f"{m} (95% CI)" for m in metrics]]
    rows = []
    for center in [*[c for c in first_seen(df["center"]) if c != POOLED], POOLED]:
        first = _lookup(df, center, metrics[0])
        if first is None:
            first = df[df["center"] == center].iloc[0]
        role = ROLE_WORDS.get(str(first["role"]), str(first["role"]))
        lead = [center, role, _videos_cell(first["n_videos"]), count(first["n_frames"]), pct(first["parse_fail_rate"])]
        rows.append(lead + [cell(_lookup(df, center, m)) for m in metrics])
    fallback = "" if metrics[0] == info.headline else f" (its headline {info.headline} was not computed)"
    notes = [
        f"Cells: estimate (95% CI). Leading metric: {metrics[0]}{fallback}; Arena component: {info.arena_metric}. "
        f"{POOLED}: {method}; every metric pooled on the logit scale.",
        "Unparseable: share of frames whose answer could not be read (pooled: over all centers' frames); such a "
        "frame counts as an incorrect prediction.",
        f"† fewer than {SMALL_N} videos: the interval (t with n − 1 df over videos) rests on few clusters.",
    ]
    title = f"{info.title or task} ({task}): per-center results"
    return Table(f"task-{task}", title, head, rows, len(rows) - 1, notes + _footnotes(df, metrics), left=2)


def sensitivity_table(df: pd.DataFrame, task: str, info: TaskInfo) -> Table | None:
    """Per center: each sensitivity metric on all frames (unparseable = incorrect) and on parseable frames only."""
    pairs = [m for m in info.sensitivity if f"{m}{SENSITIVITY_SUFFIX}" in set(df["metric"]) and m in set(df["metric"])]
    if not pairs:
        return None
    head = ["Center", "Unparseable"]
    for m in pairs:
        head += [f"{m}, all frames (95% CI)", f"{m}, parseable frames only (95% CI)"]
    rows = []
    for center in [*[c for c in first_seen(df["center"]) if c != POOLED], POOLED]:
        base = _lookup(df, center, pairs[0])
        row = [center, pct(base["parse_fail_rate"]) if base is not None else DASH]
        for m in pairs:
            row += [cell(_lookup(df, center, m)), cell(_lookup(df, center, f"{m}{SENSITIVITY_SUFFIX}"))]
        rows.append(row)
    notes = ["Sensitivity analysis: the same metric recomputed on the frames whose answer could be read."]
    title = f"{info.title or task} ({task}): sensitivity to unparseable answers"
    return Table(f"sensitivity-{task}", title, head, rows, len(rows) - 1, notes)


def pooling_table(df: pd.DataFrame, task: str, info: TaskInfo) -> Table:
    """Per metric: k, random-effects estimate, prediction interval, fixed effect, tau-squared, I-squared."""
    pooled = df[df["center"] == POOLED]
    head = [
        "Metric",
        "k",
        "Random effects (95% CI)",
        "95% prediction interval",
        "Fixed effect (95% CI)",
        "τ²",
        "I²",
        "Scale",
    ]
    rows = []
    for metric in info.ordered(pooled["metric"]):
        r = _lookup(pooled, POOLED, metric)
        assert r is not None  # every metric has a pooled row
        pi = span(r["pi_low"], r["pi_high"])
        rows.append(
            [
                metric,
                count(r["k"]),
                interval(r["estimate"], r["ci_low"], r["ci_high"]),
                pi,
                interval(r["fe_estimate"], r["fe_ci_low"], r["fe_ci_high"]),
                small(r["tau2"]),
                pct(r["i2"]),
                str(r["pooling_scale"]),
            ]
        )
    notes = [
        "τ² is on the pooling scale (logit for proportions); the prediction interval uses t with k − 2 "
        "degrees of freedom and is omitted for fewer than 3 centers."
    ]
    return Table(f"pooling-{task}", f"{info.title or task} ({task}): pooling", head, rows, None, notes)


def arena_table(tasks: list[str], scores: list[ArenaScore], infos: Mapping[str, TaskInfo]) -> Table:
    """Arena Score per center, naming the tasks it averages."""
    named = ", ".join(f"{t} ({infos[t].arena_metric})" for t in tasks)
    rows = []
    for s in scores:
        missing = s.note or (f"not available: {', '.join(s.missing)}" if s.missing else "")
        rows.append([s.center, num(s.score), str(len(s.tasks)), missing])
    notes = [
        "Arena Score (the published SurgVLM/Surg-R1 definition) = unweighted mean of each task's Arena component "
        f"over the tasks that ran: {named}. A task's table may lead with another metric (its headline).",
        f"The {POOLED} row averages the pooled components, only when every center averaged the same tasks.",
    ]
    return Table(
        "arena", "Arena Score", ["Center", "Arena Score", "Tasks averaged", "Note"], rows, len(rows) - 1, notes
    )


def rounds_table(all_rounds: pd.DataFrame, task: str, info: TaskInfo) -> Table:
    """A task's headline metric per center across rounds, with each center's role(s)."""
    lead = info.lead(all_rounds.loc[all_rounds["task"] == task, "metric"])
    df = all_rounds[(all_rounds["task"] == task) & (all_rounds["metric"] == lead)]
    rounds = sorted(int(r) for r in df["round"].unique())
    rows = []
    for center in first_seen(df["center"]):
        mine = df[df["center"] == center]
        roles = ", ".join(dict.fromkeys(ROLE_WORDS.get(str(r), str(r)) for r in mine["role"]))
        by_round = {int(r["round"]): r for _, r in mine.iterrows()}
        rows.append([center, roles, *[cell(by_round.get(r)) for r in rounds]])
    head = ["Center", "Role", *[f"Round {r}" for r in rounds]]
    title = f"{info.title or task} ({task}): {lead} across rounds"
    return Table(f"rounds-{task}", title, head, rows, None, ["Cells: estimate (95% CI)."], left=2)
