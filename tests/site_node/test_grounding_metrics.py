"""Grounding metrics: hand-written answers and labels (case tables), and scikit-learn on random cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from protocols.tasks import load_task
from site_node.grounding import GroundingRuntime
from site_node.metrics.grounding import GROUNDING_METRICS, Case, Consistency, set_f1, summarise
from site_node.reasoning import Levels
from site_node.task_runtime import Answer, runtime_for

G = GroundingRuntime(load_task("grounding"))
F = frozenset
CALOT = {"instruments": F({"grasper", "hook"}), "targets": F({"gallbladder", "cystic_duct"})}
CALOT_T = {**CALOT, "triplets": F({"grasper,retract,gallbladder", "hook,dissect,cystic_duct"})}


def _think(l1: str | None, l2: str | None, l3: str | None, answer: str) -> str:
    levels = [f"L{k}: {t}." for k, t in ((1, l1), (2, l2), (3, l3)) if t is not None]
    return f"<think>{' '.join(levels)}</think><answer>{answer}</answer>"


def _phase_case(text: str, truth: str, **frame: Any) -> Case:
    """A phase-task answer on a frame whose labels are `frame` (and whose phase is `truth`)."""
    return G.case(runtime_for("phase"), truth, Answer(text), {"phase": truth, **frame})


def _values(cases: list[Case]) -> dict[str, float]:
    return {k: e.estimate for k, e in summarise([cases], seed=0, replicates=100).items()}


PERFECT = _think(
    "grasper, hook, gallbladder, cystic duct",
    "grasper retract gallbladder; hook dissect cystic duct",
    "CalotTriangleDissection, critical view of safety not achieved",
    "CalotTriangleDissection",
)

TABLE = [
    (  # perfect: every level matches the labels and the answer
        "perfect",
        [_phase_case(PERFECT, "CalotTriangleDissection", **CALOT_T)],
        {
            "grounded_accuracy": 1,
            "right_for_wrong_reasons": 0,
            "l1_instrument_precision": 1,
            "l1_instrument_recall": 1,
            "l1_instrument_f1": 1,
            "l1_hallucination_rate": 0,
            "l1_anatomy_f1": 1,
            "l2_triplet_f1": 1,
            "l3_answer_consistency": 1,
            "l3_phase_accuracy": 1,
            "format_validity": 1,
        },
    ),
    (  # hallucinated instruments: one frame half right (still grounded), one all wrong (right for wrong reasons)
        "hallucinated",
        [
            _phase_case(
                _think("grasper, hook, scissors, clipper", "none", "ClippingCutting", "ClippingCutting"),
                "ClippingCutting",
                instruments=F({"grasper", "hook"}),
            ),
            _phase_case(
                _think("scissors, clipper", "none", "ClippingCutting", "ClippingCutting"),
                "ClippingCutting",
                instruments=F({"grasper"}),
            ),
        ],
        # tp 2, fp 4, fn 1
        {
            "grounded_accuracy": 1 / 2,
            "right_for_wrong_reasons": 1 / 2,
            "l1_instrument_precision": 2 / 6,
            "l1_instrument_recall": 2 / 3,
            "l1_instrument_f1": 4 / 9,
            "l1_hallucination_rate": 4 / 6,
            "l1_anatomy_f1": math.nan,
            "l2_triplet_f1": math.nan,
            "l3_answer_consistency": 1,
            "l3_phase_accuracy": 1,
            "format_validity": 1,
        },
    ),
    (  # missing L1 (and L2): not grounded although correct; L1 metrics have no readable frame
        "missing level",
        [_phase_case(_think(None, None, "Preparation", "Preparation"), "Preparation", **CALOT_T)],
        {
            "grounded_accuracy": 0,
            "right_for_wrong_reasons": 1,
            "l1_instrument_precision": math.nan,
            "l1_instrument_recall": math.nan,
            "l1_instrument_f1": math.nan,
            "l1_hallucination_rate": math.nan,
            "l1_anatomy_f1": math.nan,
            "l2_triplet_f1": math.nan,
            "l3_answer_consistency": 1,
            "l3_phase_accuracy": 1,
            "format_validity": 0,
        },
    ),
    (  # L3 contradicts the (right) answer: inconsistent, and L3's phase is wrong
        "L3 contradicts",
        [
            _phase_case(
                _think("grasper, hook", "none", "Preparation", "CalotTriangleDissection"),
                "CalotTriangleDissection",
                **CALOT_T,
            )
        ],
        {
            "grounded_accuracy": 1,
            "right_for_wrong_reasons": 0,
            "l1_instrument_f1": 1,
            "l1_anatomy_f1": 0,
            "l2_triplet_f1": 0,
            "l3_answer_consistency": 0,
            "l3_phase_accuracy": 0,
            "format_validity": 1,
        },
    ),
    (  # synonyms of instruments, anatomy, verbs and phases count as their names
        "synonyms",
        [
            _phase_case(
                _think(
                    "grasping forceps, electrocautery hook, gall bladder",
                    "forceps retracting the gb; monopolar hook dissects cystic duct",
                    "calot's triangle dissection",
                    "calot dissection",
                ),
                "CalotTriangleDissection",
                **CALOT_T,
            )
        ],
        {
            "grounded_accuracy": 1,
            "l1_instrument_f1": 1,
            "l1_anatomy_f1": 2 / 3,
            "l2_triplet_f1": 1,
            "l3_answer_consistency": 1,
            "l3_phase_accuracy": 1,
            "format_validity": 1,
        },
    ),
    (  # a wrong final answer is never grounded, however good the reasoning
        "wrong answer",
        [
            _phase_case(
                PERFECT.replace("<answer>CalotTriangleDissection", "<answer>Preparation"),
                "CalotTriangleDissection",
                **CALOT_T,
            )
        ],
        {
            "grounded_accuracy": 0,
            "right_for_wrong_reasons": math.nan,
            "l1_instrument_f1": 1,
            "l3_answer_consistency": 0,
            "l3_phase_accuracy": 1,
        },
    ),
]


@pytest.mark.parametrize(("name", "cases", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_metrics_of_hand_written_answers(name: str, cases: list[Case], expected: dict[str, float]) -> None:
    got = _values(cases)
    assert set(got) == set(GROUNDING_METRICS)
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, nan_ok=True), metric


def test_cvs_answers_are_checked_against_the_cvs_state_in_l3() -> None:
    cvs = runtime_for("cvs")
    yes = "C1: yes; C2: yes; C3: yes"
    agree = G.case(cvs, (True, True, True), Answer(_think("hook", "none", "critical view of safety achieved", yes)), {})
    differ = G.case(cvs, (True, True, True), Answer(_think("hook", "none", "CVS not achieved", yes)), {})
    unread = G.case(cvs, (True, True, True), Answer(_think("hook", "none", "CVS achieved", "maybe")), {})
    assert agree.correct and agree.consistency is Consistency.AGREES
    assert differ.consistency is Consistency.DISAGREES and not unread.correct
    assert unread.consistency is Consistency.ANSWER_UNREAD
    est = summarise([[agree, differ, unread]], seed=0, replicates=100)["l3_answer_consistency"]
    assert est.estimate == 0.5 and est.n_frames == 3 and est.parse_fail_rate == pytest.approx(1 / 3)


def test_tasks_without_a_phase_or_cvs_answer_have_no_consistency() -> None:
    case = G.case(runtime_for("action"), "dissect", Answer(_think("hook", "none", "Preparation", "dissect")), {})
    assert case.correct and case.consistency is Consistency.NOT_APPLICABLE


INSTRUMENTS = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")


def _random_case(rng: np.random.Generator) -> tuple[Case, np.ndarray, np.ndarray | None, bool]:
    truth = rng.random(len(INSTRUMENTS)) < 0.3
    pred = None if rng.random() < 0.1 else (truth ^ (rng.random(len(INSTRUMENTS)) < 0.25))
    named = None if pred is None else F(n for n, p in zip(INSTRUMENTS, pred, strict=True) if p)
    levels = Levels(named, None if named is None else F(), F(), None, None, True)
    correct = bool(rng.random() < 0.7)
    inst = F(n for n, t in zip(INSTRUMENTS, truth, strict=True) if t)
    return Case(levels, correct, Consistency.NOT_APPLICABLE, instruments=inst), truth, pred, correct


@pytest.mark.parametrize("seed", range(12))
def test_l1_metrics_match_sklearn_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    videos = [[_random_case(rng) for _ in range(int(rng.integers(3, 30)))] for _ in range(int(rng.integers(2, 8)))]
    got = summarise([[c for c, *_ in v] for v in videos], seed=seed, replicates=100)
    rows = [r for v in videos for r in v]
    read = [(t, p) for _, t, p, _ in rows if p is not None]
    y, p = np.array([t for t, _ in read]), np.array([q for _, q in read])
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="micro", zero_division=np.nan)
    assert got["l1_instrument_precision"].estimate == pytest.approx(prec, nan_ok=True)
    assert got["l1_instrument_recall"].estimate == pytest.approx(rec, nan_ok=True)
    assert got["l1_instrument_f1"].estimate == pytest.approx(f1, nan_ok=True)
    assert got["l1_hallucination_rate"].estimate == pytest.approx(1 - prec, nan_ok=True)
    assert got["l1_instrument_f1"].parse_fail_rate == pytest.approx(1 - len(read) / len(rows))
    # per frame: sklearn's binary F1 over the instrument vector (nothing to find, nothing named: 1; unread: 0)
    frame_f1 = [0.0 if q is None else f1_score(t, q, zero_division=1.0) for _, t, q, _ in rows]
    grounded = [c and f >= 0.5 for (_, _, _, c), f in zip(rows, frame_f1, strict=True)]
    wrong_reasons = [f < 0.5 for (_, _, _, c), f in zip(rows, frame_f1, strict=True) if c]
    assert got["grounded_accuracy"].estimate == pytest.approx(np.mean(grounded))
    assert got["right_for_wrong_reasons"].estimate == pytest.approx(np.mean(wrong_reasons))
    assert got["grounded_accuracy"].n_videos == len(videos)
    est = got["grounded_accuracy"]
    assert est.ci_low <= est.estimate <= est.ci_high


def test_set_f1_edges() -> None:
    assert set_f1(F(), F()) == 1.0 and set_f1(F({"hook"}), None) == 0.0 and set_f1(F({"hook"}), F()) == 0.0
    assert set_f1(F({"hook", "grasper"}), F({"hook"})) == pytest.approx(2 / 3)


def test_the_bootstrap_is_seeded_and_clusters_by_video() -> None:
    rng = np.random.default_rng(5)
    videos = [[_random_case(rng)[0] for _ in range(10)] for _ in range(6)]
    a, b = summarise(videos, seed=3, replicates=200), summarise(videos, seed=3, replicates=200)
    assert a == b or all(
        (x.ci_low, x.ci_high) == (y.ci_low, y.ci_high) or math.isnan(x.ci_low)
        for x, y in zip(a.values(), b.values(), strict=True)
    )
    assert a["grounded_accuracy"].n_videos == 6 and a["grounded_accuracy"].n_frames == 60
