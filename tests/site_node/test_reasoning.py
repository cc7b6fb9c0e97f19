"""Reading Surg-R1's reasoning levels: the training format, free text, synonyms, and what cannot be read."""

from __future__ import annotations

import pytest

from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target
from site_node.reasoning import Levels, ReasoningReader, split_levels

READER = ReasoningReader.of(load_task("triplet"), load_task("phase"))
F = frozenset

CASES = [
    (  # the training / warm-up format itself
        hierarchical_target(
            "CalotTriangleDissection",
            ["grasper", "hook"],
            "grasper retract gallbladder; hook dissect cystic duct",
            False,
        ),
        Levels(
            F({"grasper", "hook"}),
            F(),
            F({"grasper,retract,gallbladder", "hook,dissect,cystic_duct"}),
            "CalotTriangleDissection",
            False,
            True,
        ),
    ),
    (  # synonyms everywhere: instruments, anatomy, verbs, phase; CVS spelled as an abbreviation
        "<think>L1: the bipolar forceps and a grasping forceps beside the liver bed. L2: Bipolar coagulates the "
        "liver. L3: cleaning and coagulation, CVS achieved.</think><answer>CleaningCoagulation</answer>",
        Levels(
            F({"bipolar", "grasper"}), F({"liver"}), F({"bipolar,coagulate,liver"}), "CleaningCoagulation", True, True
        ),
    ),
    (  # 'no instrument' and 'none' are read as empty, not as missing
        "<think>L1: no instrument. L2: none. L3: Preparation.</think><answer>Preparation</answer>",
        Levels(F(), F(), F(), "Preparation", None, True),
    ),
    (  # missing L2: that level is None, the others are read
        "<think>L1: grasper, specimen bag. L3: GallbladderPackaging.</think><answer>GallbladderPackaging</answer>",
        Levels(F({"grasper"}), F({"specimen_bag"}), None, "GallbladderPackaging", None, True),
    ),
    (  # an L2 statement outside the vocabulary fails the whole level (never a partial guess)
        "<think>L1: hook. L2: hook dissect gallbladder; hook sings loudly. L3: GallbladderDissection.</think>",
        Levels(F({"hook"}), F(), None, "GallbladderDissection", None, True),
    ),
    (  # L1 naming nothing the vocabulary knows, L3 naming two phases: unread
        "<think>L1: something shiny. L2: none. L3: Preparation or ClippingCutting.</think><answer>x</answer>",
        Levels(None, None, F(), None, None, False),
    ),
    ("Preparation", Levels(None, None, None, None, None, False)),  # no reasoning at all
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_levels_are_read_by_name_and_synonym(text: str, expected: Levels) -> None:
    assert READER.read(text) == expected


def test_validity_needs_all_three_levels() -> None:
    assert CASES[0][1].valid and CASES[1][1].valid and CASES[2][1].valid
    assert not CASES[3][1].valid and not CASES[5][1].valid and not CASES[6][1].valid


def test_levels_split_inside_think_only() -> None:
    text = "<think>L1 (perception): grasper. L3: Preparation</think><answer>L2: hook dissect gallbladder</answer>"
    assert split_levels(text) == {1: "grasper", 3: "Preparation"}
