"""Answer parser: tagged form and variants; unreadable answers are None, never a guess."""

from __future__ import annotations

import pytest

from protocols.tasks import load_task
from site_node.labels import AliasIndex
from site_node.parsing import parse_single_label

MAPPER = AliasIndex.of(load_task("phase"))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<think>L1: grasper.</think><answer>CalotTriangleDissection</answer>", "CalotTriangleDissection"),
        ("<ANSWER> calot triangle dissection </ANSWER>", "CalotTriangleDissection"),
        ("<answer>Calot's triangle dissection.</answer>", "CalotTriangleDissection"),
        ("<answer>GALLBLADDER_PACKAGING</answer>", "GallbladderPackaging"),
        ("<think>...</think>\nFinal answer: clipping and cutting", "ClippingCutting"),
        ("Phase: Preparation", "Preparation"),
        ("CleaningCoagulation", "CleaningCoagulation"),
        ("<answer>The phase is gallbladder retraction</answer>", "GallbladderRetraction"),
        ("<answer>GallbladderDissection", "GallbladderDissection"),  # unterminated tag
        ("", None),
        ("<answer></answer>", None),
        ("<answer>Appendectomy</answer>", None),
        ("<answer>Preparation or ClippingCutting</answer>", None),  # two labels: never pick one
        ("<think>I see a grasper</think>", None),
    ],
)
def test_parse_single_label(answer: str, expected: str | None) -> None:
    assert parse_single_label(answer, MAPPER) == expected


def test_last_tag_wins() -> None:
    text = "<answer>Preparation</answer> wait, <answer>ClippingCutting</answer>"
    assert parse_single_label(text, MAPPER) == "ClippingCutting"
