"""The hierarchical answer text shared by the warm-up and site training."""

from __future__ import annotations

import pytest

from protocols.errors import DataError
from site_node.answer_format import hierarchical_target, tool_word


def test_hierarchical_target_writes_only_supported_levels() -> None:
    assert hierarchical_target("ClippingCutting", ["grasper", "clipper"]) == (
        "<think>L1: grasper, clipper. L3: ClippingCutting.</think><answer>ClippingCutting</answer>"
    )
    assert hierarchical_target("Preparation", [], "grasper retracts gallbladder") == (
        "<think>L1: no instrument. L2: grasper retracts gallbladder. L3: Preparation.</think>"
        "<answer>Preparation</answer>"
    )
    assert hierarchical_target("Preparation") == "<think>L3: Preparation.</think><answer>Preparation</answer>"


@pytest.mark.parametrize(
    "name, word",
    [
        ("SpecimenBag", "specimen bag"),
        ("specimen_bag", "specimen bag"),
        ("Grasper", "grasper"),
        ("IRRIGATOR", "irrigator"),
    ],
)
def test_tool_names_map_to_answer_words(name: str, word: str) -> None:
    assert tool_word(name) == word


def test_unknown_tool_names_the_value() -> None:
    with pytest.raises(DataError, match="unknown tool 'Laser'"):
        tool_word("Laser")


def test_cvs_joins_the_phase_in_l3() -> None:
    assert hierarchical_target("ClippingCutting", ["clipper"], cvs_achieved=True) == (
        "<think>L1: clipper. L3: ClippingCutting, critical view of safety achieved.</think>"
        "<answer>ClippingCutting</answer>"
    )
    assert "critical view of safety not achieved" in hierarchical_target("ClippingCutting", cvs_achieved=False)
