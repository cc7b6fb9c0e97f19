"""The "Reasoning grounding" section: the grounding metrics per center and pooled, and what each one counts."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from protocols.tasks import load_task
from reports.frame import POOLED, first_seen
from reports.layout import DASH, SUPPRESSED, Table, cell, count, num
from reports.taskinfo import TaskInfo

TASK = "grounding"
TITLE = "Reasoning grounding"

# metric -> (column header, its denominator: what one unit of n_frames is)
METRICS: dict[str, tuple[str, str]] = {
    "grounded_accuracy": (
        "Grounded accuracy",
        "answers on frames with instrument labels (unread L1 counts as not grounded)",
    ),
    "right_for_wrong_reasons": ("Right for wrong reasons", "correct answers on frames with instrument labels"),
    "l1_instrument_precision": ("L1 precision", "instruments named in a readable L1 on frames with instrument labels"),
    "l1_instrument_recall": ("L1 recall", "labelled instruments of frames whose L1 could be read"),
    "l1_instrument_f1": ("L1 F1", "named and labelled instruments pooled over frames with a readable L1"),
    "l1_hallucination_rate": ("L1 hallucination", "instruments named in a readable L1 (1 − precision)"),
    "l1_anatomy_f1": (
        "L1 anatomy F1",
        "anatomy named in a readable L1 and triplet targets, on triplet-labelled frames",
    ),
    "l2_triplet_f1": (
        "L2 triplet F1",
        "relations stated in a readable L2 and acting triplets, on triplet-labelled frames",
    ),
    "l3_answer_consistency": (
        "L3 consistency",
        "phase and CVS answers whose final answer could be read (L3 naming nothing counts as inconsistent)",
    ),
    "l3_phase_accuracy": ("L3 phase accuracy", "answers on phase-labelled frames whose L3 names exactly one phase"),
    "format_validity": ("Format validity", "all answers of the source tasks"),
}


def _row(df: pd.DataFrame, center: str, metric: str) -> pd.Series | None:
    hit = df[(df["center"] == center) & (df["metric"] == metric)]
    return None if hit.empty else hit.iloc[0]


def _short(row: pd.Series | None) -> str:
    """The estimate alone (the task table and the pooling table carry every CI)."""
    if row is None:
        return DASH
    return SUPPRESSED if bool(row["suppressed"]) else num(row["estimate"])


def grounding_table(df: pd.DataFrame, info: TaskInfo, method: str) -> Table:
    """Centers as rows (pooled last): grounded accuracy with its 95% CI, then every other grounding metric."""
    metrics = [m for m in info.ordered(df["metric"]) if m in METRICS]
    head = [
        "Center",
        "Videos",
        "Answers",
        *[f"{METRICS[m][0]}{' (95% CI)' if m == info.headline else ''}" for m in metrics],
    ]
    rows = []
    for center in [*[c for c in first_seen(df["center"]) if c != POOLED], POOLED]:
        lead = _row(df, center, info.headline)
        counts = [DASH, DASH] if lead is None else [count(lead["n_videos"]), count(lead["n_frames"])]
        cells = [cell(_row(df, center, m)) if m == info.headline else _short(_row(df, center, m)) for m in metrics]
        rows.append([center, *counts, *cells])
    notes = [
        f"Each metric re-reads the answers the other tasks generated; Answers counts those of {info.headline}. "
        f"{POOLED}: {method}. Every metric's denominator is given in the methods."
    ]
    return Table(f"{TASK}-summary", f"{TITLE}: per-center results", head, rows, len(rows) - 1, notes)


def methods_paragraph(infos: Mapping[str, TaskInfo]) -> str | None:
    """What each grounding metric counts, or None when the study did not run the grounding task."""
    if TASK not in infos:
        return None
    parts = [f"{m} over {METRICS[m][1]}" for m in infos[TASK].ordered(METRICS)]
    need = load_task(TASK).extra.get("min_instrument_f1")
    return (
        "Reasoning grounding re-read, on site, the answers the other tasks had generated (no further generation) "
        "and parsed their L1 (instruments, anatomy), L2 (instrument-verb-target relations) and L3 (phase, critical "
        "view of safety) levels, mapping names by the task vocabularies and their synonyms; what could not be read "
        "was counted, never guessed. Frames were labelled for instruments by CholecT50 triplets or Cholec80 tool "
        f"files. An answer is grounded when it is correct and its L1 instrument F1 is at least {need}. Precision, "
        "recall and F1 are pooled over each center's frames (micro-averaged) with a video-level bootstrap CI. "
        "Denominators: " + "; ".join(parts) + "."
    )
