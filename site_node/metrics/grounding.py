"""Reasoning-grounding metrics: the reasoning levels of answers against the frame's labels, pooled per site."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from site_node.metrics.bootstrap import Estimate, bootstrap_estimate
from site_node.reasoning import Levels


class Consistency(Enum):
    """Whether L3 states what the final answer says (a phase, or the CVS state)."""

    NOT_APPLICABLE = "not_applicable"  # the final answer is neither a phase nor a CVS judgement
    ANSWER_UNREAD = "answer_unread"  # the final answer could not be read: nothing to compare
    AGREES = "agrees"
    DISAGREES = "disagrees"


@dataclass(frozen=True)
class Case:
    """One answer of a source task on one frame: what its reasoning says and what the frame's labels say."""

    levels: Levels
    correct: bool  # the source task's final answer against its own label (unreadable: wrong)
    consistency: Consistency
    instruments: frozenset[str] | None = None  # the frame's instruments; None: not labelled
    targets: frozenset[str] | None = None  # the frame's triplet targets (anatomy); None: no triplet labels
    triplets: frozenset[str] | None = None  # the frame's acting triplets; None: no triplet labels
    phase: str | None = None  # the frame's phase; None: not labelled


def set_f1(truth: frozenset[str], pred: frozenset[str] | None) -> float:
    """F1 of one frame's named set; nothing to name and nothing named is 1, an unreadable level 0."""
    if pred is None:
        return 0.0
    if not truth and not pred:
        return 1.0
    return 2 * len(truth & pred) / (len(truth) + len(pred))


def _prf(truth: frozenset[str], pred: frozenset[str]) -> tuple[float, float, float]:
    return float(len(truth & pred)), float(len(pred - truth)), float(len(truth - pred))


# Per case: None when the case is outside the metric's population, else (counted row, unreadable).
Rule = Callable[[Case, float], "tuple[tuple[float, ...], bool] | None"]


def _l1(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    if c.instruments is None:
        return None
    if c.levels.instruments is None:
        return (0.0, 0.0, 0.0), True
    return _prf(c.instruments, c.levels.instruments), False


def _anatomy(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    if c.targets is None:
        return None
    return ((0.0, 0.0, 0.0), True) if c.levels.anatomy is None else (_prf(c.targets, c.levels.anatomy), False)


def _l2(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    if c.triplets is None:
        return None
    return ((0.0, 0.0, 0.0), True) if c.levels.relations is None else (_prf(c.triplets, c.levels.relations), False)


def _grounded(c: Case, need: float) -> tuple[tuple[float, ...], bool] | None:
    if c.instruments is None:
        return None
    ok = c.correct and set_f1(c.instruments, c.levels.instruments) >= need
    return (float(ok), 1.0), c.levels.instruments is None


def _wrong_reasons(c: Case, need: float) -> tuple[tuple[float, ...], bool] | None:
    if c.instruments is None or not c.correct:
        return None
    return (float(set_f1(c.instruments, c.levels.instruments) < need), 1.0), c.levels.instruments is None


def _consistent(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    if c.consistency is Consistency.NOT_APPLICABLE:
        return None
    if c.consistency is Consistency.ANSWER_UNREAD:
        return (0.0, 0.0), True
    return (float(c.consistency is Consistency.AGREES), 1.0), False


def _phase(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    if c.phase is None:
        return None
    if c.levels.phase is None:  # L3 names no phase: outside the metric, counted as unread
        return (0.0, 0.0), True
    return (float(c.levels.phase == c.phase), 1.0), False


def _valid(c: Case, _: float) -> tuple[tuple[float, ...], bool] | None:
    return (float(c.levels.valid), 1.0), not c.levels.valid


def _ratio(num: Callable[[np.ndarray], float], den: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    def statistic(rows: np.ndarray) -> float:
        d = den(rows)
        return num(rows) / d if d > 0 else float("nan")

    return statistic


_TP, _FP, _FN = (lambda r: float(r[:, 0].sum())), (lambda r: float(r[:, 1].sum())), (lambda r: float(r[:, 2].sum()))
_PRECISION = _ratio(_TP, lambda r: _TP(r) + _FP(r))
_RECALL = _ratio(_TP, lambda r: _TP(r) + _FN(r))
_F1 = _ratio(lambda r: 2 * _TP(r), lambda r: 2 * _TP(r) + _FP(r) + _FN(r))
_SHARE = _ratio(lambda r: float(r[:, 0].sum()), lambda r: float(r[:, 1].sum()))

# metric -> (rule, statistic over the per-video summed rows): micro-averaged over the site's frames
_TABLE: dict[str, tuple[Rule, Callable[[np.ndarray], float]]] = {
    "grounded_accuracy": (_grounded, _SHARE),
    "right_for_wrong_reasons": (_wrong_reasons, _SHARE),
    "l1_instrument_precision": (_l1, _PRECISION),
    "l1_instrument_recall": (_l1, _RECALL),
    "l1_instrument_f1": (_l1, _F1),
    "l1_hallucination_rate": (_l1, lambda r: 1.0 - _PRECISION(r)),
    "l1_anatomy_f1": (_anatomy, _F1),
    "l2_triplet_f1": (_l2, _F1),
    "l3_answer_consistency": (_consistent, _SHARE),
    "l3_phase_accuracy": (_phase, _SHARE),
    "format_validity": (_valid, _SHARE),
}
GROUNDING_METRICS = tuple(_TABLE)


def _estimate(
    videos: Sequence[Sequence[Case]],
    rule: Rule,
    stat: Callable[[np.ndarray], float],
    need: float,
    *,
    seed: int,
    replicates: int,
) -> Estimate:
    rows, n_frames, n_failed = [], 0, 0
    for cases in videos:
        judged = [j for j in (rule(c, need) for c in cases) if j is not None]
        if not judged:
            continue  # a video outside the metric's population is not one of its videos
        n_frames += len(judged)
        n_failed += sum(failed for _, failed in judged)
        rows.append(np.sum([row for row, _ in judged], axis=0))
    if not rows:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, float("nan"))
    table = np.array(rows, dtype=float)
    # the statistic of the pooled counts of resampled videos (the cluster bootstrap hands over video indices)
    return bootstrap_estimate(
        len(rows), lambda idx: stat(table[idx]), n_frames=n_frames, n_failed=n_failed, seed=seed, replicates=replicates
    )


def summarise(
    videos: Sequence[Sequence[Case]], *, seed: int, replicates: int = 1000, min_instrument_f1: float = 0.5
) -> dict[str, Estimate]:
    """Every grounding metric over the site's cases, with a video-level bootstrap CI.

    Each metric counts only the cases in its population (n_frames); parse_fail_rate is the share of them whose
    needed level (or final answer) could not be read. Unread cases count against grounded_accuracy,
    right_for_wrong_reasons and format_validity, and are left out of the other metrics' denominators.
    """
    return {
        name: _estimate(videos, rule, stat, min_instrument_f1, seed=seed + i, replicates=replicates)
        for i, (name, (rule, stat)) in enumerate(_TABLE.items())
    }
