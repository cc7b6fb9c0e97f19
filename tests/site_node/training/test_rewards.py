"""GRPO rewards: a case table per reward kind, read with the tasks' real parsers and vocabularies."""

from __future__ import annotations

import pytest

from protocols.errors import ConfigError
from protocols.grpo import RewardKind
from site_node.labels import LabelledBox
from site_node.training.rewards import FrameTruth, Rewarder, set_f1

ALL = dict.fromkeys(RewardKind, 1.0)
GOOD = (
    "<think>L1: grasper, hook. L2: grasper retract gallbladder; hook dissect cystic plate. "
    "L3: CalotTriangleDissection, critical view of safety not achieved.</think>"
    "<answer>CalotTriangleDissection</answer>"
)
TRUTH = FrameTruth(
    phase="CalotTriangleDissection",
    tools=("grasper", "hook"),
    triplets=frozenset({"grasper,retract,gallbladder", "hook,dissect,cystic_plate"}),
    cvs=(False, False, True),
)


def components(task: str, text: str, truth: FrameTruth = TRUTH) -> dict[RewardKind, float]:
    return Rewarder(task, ALL).components(text, truth)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, 1.0),
        ("<think>L1: grasper. L3: Preparation.</think><answer>Preparation</answer>", 0.0),  # no L2
        ("<think>L1: grasper. L2: none. L3: Preparation.</think><answer>nonsense</answer>", 0.0),  # answer unread
        ("<think>L1: grasper. L2: none. L3: Preparation.</think><answer>Preparation</answer>", 1.0),
        ("Preparation", 0.0),
    ],
)
def test_format(text: str, expected: float) -> None:
    assert components("phase", text)[RewardKind.FORMAT] == expected


def test_format_asks_for_l2_only_where_triplets_are_labelled() -> None:
    text = "<think>L1: grasper. L3: Preparation.</think><answer>Preparation</answer>"
    assert components("phase", text, FrameTruth(phase="Preparation", tools=("grasper",)))[RewardKind.FORMAT] == 1.0
    assert components("phase", text)[RewardKind.FORMAT] == 0.0  # TRUTH has triplets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, 1.0),
        ("<answer>Calot triangle dissection</answer>", 1.0),  # a synonym names the same phase
        ("<answer>Preparation</answer>", 0.0),
        ("<answer>Preparation or clipping</answer>", 0.0),  # two phases named: unread, wrong
        ("", 0.0),
    ],
)
def test_phase_correct(text: str, expected: float) -> None:
    assert components("phase", text)[RewardKind.PHASE] == expected


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("phase", GOOD, 1.0),  # L2 of a phase answer states both triplets
        ("phase", GOOD.replace("; hook dissect cystic plate", ""), 2 / 3),  # one of two: F1 = 2*1/(2+1)
        (
            "phase",
            GOOD.replace("L2: grasper retract gallbladder;", "L2: scissors cut liver; grasper retract liver;"),
            0.4,
        ),  # fmt: skip  # 1 hit among 3 stated and 2 true: 2/(3+2)
        ("phase", "<answer>CalotTriangleDissection</answer>", 0.0),  # no L2: nothing stated
        ("triplet", "<answer>grasper,retract,gallbladder; hook,dissect,cystic_plate</answer>", 1.0),
        ("triplet", "<answer>grasper,retract,gallbladder</answer>", 2 / 3),
        ("triplet", "<answer>none</answer>", 0.0),
    ],
)
def test_triplet_f1(task: str, text: str, expected: float) -> None:
    assert components(task, text)[RewardKind.TRIPLET] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("cvs", "<answer>C1: no; C2: no; C3: yes</answer>", 1.0),
        ("cvs", "<answer>C1: yes; C2: no; C3: yes</answer>", 2 / 3),
        ("cvs", "<answer>C1: yes; C2: yes; C3: no</answer>", 0.0),
        ("cvs", "<answer>maybe</answer>", 0.0),
        ("phase", GOOD, 2 / 3),  # L3 'not achieved' read as no for each criterion: C1, C2 right, C3 wrong
        ("phase", GOOD.replace("not achieved", "achieved"), 1 / 3),
        ("phase", GOOD.replace(", critical view of safety not achieved", ""), 0.0),  # says nothing about CVS
    ],
)
def test_cvs_per_criterion_accuracy(task: str, text: str, expected: float) -> None:
    assert components(task, text)[RewardKind.CVS] == pytest.approx(expected)


BOX = LabelledBox("grasper", 0.1, 0.1, 0.5, 0.5)


@pytest.mark.parametrize(
    ("truth", "text", "expected"),
    [
        ((BOX,), "<answer>grasper [0.1, 0.1, 0.5, 0.5]</answer>", 1.0),
        ((BOX,), "<answer>grasper [0.1, 0.1, 0.5, 0.3]</answer>", 0.5),  # half the box
        # the same exact box plus a false positive: the metric's penalty, (1 + 0) / 2
        ((BOX,), "<answer>grasper [0.1, 0.1, 0.5, 0.5]; hook [0.6, 0.6, 0.9, 0.9]</answer>", 0.5),
        ((BOX,), "<answer>hook [0.1, 0.1, 0.5, 0.5]</answer>", 0.0),  # right place, wrong instrument: 2 zeros
        ((BOX,), "<answer>no boxes here</answer>", 0.0),
        ((), "<answer>none</answer>", 1.0),  # nothing to localise, nothing claimed
    ],
)
def test_localization_iou_with_false_positive_penalty(
    truth: tuple[LabelledBox, ...], text: str, expected: float
) -> None:
    assert components("localization", text, FrameTruth(boxes=truth))[RewardKind.LOCALIZATION] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("truth", "text", "expected"),
    [
        (TRUTH, GOOD, 1.0),
        (TRUTH, GOOD.replace("L1: grasper, hook.", "L1: grasper."), 2 / 3),
        (TRUTH, GOOD.replace("L1: grasper, hook.", "L1: grasper, hook, scissors, clipper."), 2 / 3),
        (FrameTruth(tools=()), GOOD.replace("L1: grasper, hook.", "L1: no instrument."), 1.0),
        (FrameTruth(tools=("specimen bag",)), GOOD.replace("L1: grasper, hook.", "L1: no instrument."), 1.0),
        (FrameTruth(triplets=frozenset({"hook,dissect,gallbladder"})), GOOD, 2 / 3),  # instruments from triplets
        (TRUTH, "<answer>CalotTriangleDissection</answer>", 0.0),  # no L1
    ],
)
def test_grounding_l1_instruments(truth: FrameTruth, text: str, expected: float) -> None:
    assert components("phase", text, truth)[RewardKind.GROUNDING] == pytest.approx(expected)


def test_missing_labels_leave_their_component_out_and_weights_sum() -> None:
    weights = {RewardKind.FORMAT: 0.5, RewardKind.PHASE: 2.0, RewardKind.CVS: 1.0}
    rewarder = Rewarder("phase", weights)
    totals, parts = rewarder.score([GOOD, "<answer>Preparation</answer>"], FrameTruth(phase="CalotTriangleDissection"))
    assert parts == [{RewardKind.FORMAT: 1.0, RewardKind.PHASE: 1.0}, {RewardKind.FORMAT: 0.0, RewardKind.PHASE: 0.0}]
    assert totals == [2.5, 0.0]


def test_a_task_without_a_reward_cannot_train() -> None:
    with pytest.raises(ConfigError, match="task 'action' declares no reward"):
        Rewarder("action", ALL)


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [(set(), set(), 1.0), ({"a"}, set(), 0.0), ({"a", "b"}, {"a"}, 2 / 3), ({"a"}, {"a"}, 1.0)],
)
def test_set_f1(truth: set[str], pred: set[str], expected: float) -> None:
    assert set_f1(frozenset(truth), frozenset(pred)) == pytest.approx(expected)
