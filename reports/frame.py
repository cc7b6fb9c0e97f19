"""Validation of the tidy results table and the extra columns the reports add to it."""

from __future__ import annotations

import re

import pandas as pd

from protocols.errors import DataError
from protocols.results import COLUMNS, OPTIONAL, Role

POOLED = "Pooled (random effects)"
POOLED_COLUMNS: tuple[str, ...] = (
    "pi_low",
    "pi_high",
    "tau2",
    "i2",
    "fe_estimate",
    "fe_ci_low",
    "fe_ci_high",
    "k",
    "method",
    "weight",
    "note",
)
"""Columns after the tidy schema in per_center.csv; filled on pooled rows (weight and note on center rows).
The tidy schema's own pooling_scale is the scale a center released its SE on, and on the pooled row the scale
pooled on."""

_FLOATS = ("estimate", "ci_low", "ci_high", "parse_fail_rate", "se_pooling", "undefined_share")
_COUNTS = ("n_videos", "n_frames")
_TEXT = ("study", "center", "role", "task", "metric")
_TASK_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def validate_results(results: pd.DataFrame) -> pd.DataFrame:
    """A clean copy of the tidy table with typed columns; DataError naming what is wrong."""
    if not isinstance(results, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of results, got {type(results).__name__}")
    results = results.assign(**{c: None for c in OPTIONAL if c not in results.columns})
    missing = [c for c in COLUMNS if c not in results.columns]
    if missing:
        raise DataError(f"results table lacks columns {missing}; expected {list(COLUMNS)}")
    if results.empty:
        raise DataError("results table is empty; expected at least one row")
    df = results.loc[:, list(COLUMNS)].copy().reset_index(drop=True)
    for col in _TEXT:
        if df[col].isna().any():
            raise DataError(f"column {col!r} has missing values in rows {df.index[df[col].isna()].tolist()}")
        df[col] = df[col].map(lambda v: v.value if isinstance(v, Role) else str(v)).astype(object)
    roles = {r.value for r in Role}
    bad_roles = sorted(set(df["role"]) - roles)
    if bad_roles:
        raise DataError(f"unknown roles {bad_roles}; expected one of {sorted(roles)}")
    df["round"] = _numeric(df["round"], "round").astype("int64")
    for col in _FLOATS:
        df[col] = _numeric(df[col], col).astype("float64")
    for col in _COUNTS:
        df[col] = _numeric(df[col], col).round().astype("Int64")
    df["suppressed"] = df["suppressed"].map(_as_bool).astype(bool)
    df["pooling_scale"] = df["pooling_scale"].map(lambda v: None if v is None or pd.isna(v) else str(v)).astype(object)
    # A suppressed cell is never published, even if the store kept its numbers.
    df.loc[df["suppressed"], ["estimate", "ci_low", "ci_high", "se_pooling"]] = float("nan")
    bad_tasks = sorted(t for t in set(df["task"]) if not _TASK_NAME.fullmatch(t))
    if bad_tasks:  # task names become file names (forest_<task>.png)
        raise DataError(f"task names must be lower_snake_case, got {bad_tasks}")
    studies = sorted(set(df["study"]))
    if len(studies) != 1:
        raise DataError(f"expected the results of one study, got studies {studies}")
    dup = df.duplicated(["round", "center", "task", "metric"])
    if dup.any():
        first = df.loc[dup, ["round", "center", "task", "metric"]].iloc[0].tolist()
        raise DataError(f"duplicate result rows for (round, center, task, metric) = {first}")
    return df


def select_round(df: pd.DataFrame, round: int | None) -> tuple[int, pd.DataFrame]:
    """The chosen round (None = the last one) and its rows."""
    rounds = sorted(int(r) for r in df["round"].unique())
    chosen = rounds[-1] if round is None else int(round)
    if chosen not in rounds:
        raise DataError(f"round {round!r} is not in the results; rounds present: {rounds}")
    return chosen, df[df["round"] == chosen].reset_index(drop=True)


def first_seen(values: pd.Series) -> list[str]:
    """Distinct values in order of first appearance (stable, so outputs are reproducible)."""
    return list(dict.fromkeys(str(v) for v in values))


def _numeric(series: pd.Series, name: str) -> pd.Series:
    try:
        return pd.to_numeric(series, errors="raise")
    except (ValueError, TypeError) as exc:
        raise DataError(f"column {name!r} must be numeric: {exc}") from exc


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(f"column 'suppressed' must be true/false, got {value!r}")
