"""Arena Score (the published SurgVLM/Surg-R1 definition): the unweighted mean of each task's Arena component
(phase, action, triplet, CVS accuracy, localization mIoU ...) over the tasks that ran, per center and pooled."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from reports.frame import POOLED, first_seen
from reports.taskinfo import TaskInfo


@dataclass(frozen=True)
class ArenaScore:
    """One center's Arena Score and exactly which task headlines went into it."""

    center: str
    score: float  # nan when no headline is available
    tasks: tuple[str, ...]  # "task:metric" pairs averaged
    missing: tuple[str, ...]  # tasks that ran but gave this center no usable component
    note: str = ""  # why there is no score (the pooled row when centers' component sets differ)


def headline_rows(per_center: pd.DataFrame, infos: Mapping[str, TaskInfo]) -> pd.DataFrame:
    """The rows of each task's Arena component (of the tasks that join the Arena Score)."""
    keep = [
        infos[t].in_arena and infos[t].arena_metric == m
        for t, m in zip(per_center["task"], per_center["metric"], strict=False)
    ]
    return per_center[keep]


def arena_scores(per_center: pd.DataFrame, infos: Mapping[str, TaskInfo]) -> tuple[list[str], list[ArenaScore]]:
    """The tasks that ran (in order) and the Arena Score of every center, the pooled row last."""
    heads = headline_rows(per_center, infos)
    tasks = first_seen(heads["task"])
    centers = [c for c in first_seen(heads["center"]) if c != POOLED] + [POOLED]
    scores = []
    for center in centers:
        rows = heads[heads["center"] == center]
        usable = rows[~rows["suppressed"] & rows["estimate"].notna()]
        used = [t for t in tasks if t in set(usable["task"])]
        values = [float(usable.loc[usable["task"] == t, "estimate"].iloc[0]) for t in used]
        scores.append(
            ArenaScore(
                center=center,
                score=sum(values) / len(values) if values else math.nan,
                tasks=tuple(f"{t}:{infos[t].arena_metric}" for t in used),
                missing=tuple(t for t in tasks if t not in used),
            )
        )
    sets = {s.tasks for s in scores[:-1]}
    if len(sets) > 1:  # a mean over different tasks is not one quantity: no pooled Arena Score
        note = "not pooled: the centers' Arena Scores average different tasks"
        scores[-1] = ArenaScore(POOLED, math.nan, (), tuple(tasks), note)
    return tasks, scores


def arena_frame(scores: list[ArenaScore], study: str, round_: int) -> pd.DataFrame:
    """The Arena Scores as a table (arena.csv)."""
    return pd.DataFrame(
        {
            "study": study,
            "round": round_,
            "center": [s.center for s in scores],
            "arena_score": [s.score for s in scores],
            "n_tasks": [len(s.tasks) for s in scores],
            "tasks": [";".join(s.tasks) for s in scores],
            "missing_tasks": [";".join(s.missing) for s in scores],
            "note": [s.note for s in scores],
        }
    )
