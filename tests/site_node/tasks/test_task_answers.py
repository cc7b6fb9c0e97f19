"""Answer parsers for triplet sets, CVS criteria and boxes: tagged form and variants; unreadable is None."""

from __future__ import annotations

import pytest

from protocols.tasks import load_task
from site_node.answers import YesNoGrammar, parse_boxes, parse_label_set, parse_yes_no
from site_node.labels import AliasIndex, LabelledBox, TripletVocabulary
from site_node.parsing import parse_single_label

VOCAB = TripletVocabulary.of(load_task("triplet"))
CVS = YesNoGrammar.of(load_task("cvs"))
TOOLS = AliasIndex.of(load_task("localization"))
GR, HK = "grasper,retract,gallbladder", "hook,dissect,cystic_plate"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (f"<think>L1 grasper</think><answer>{GR}; {HK}</answer>", {GR, HK}),
        ("<ANSWER>(Grasper, Retracting, Gall bladder), (hook, dissection, cystic plate)</ANSWER>", {GR, HK}),
        ("<answer>GRASPER,RETRACT,GALLBLADDER\nhook,dissect,cystic_plate</answer>", {GR, HK}),
        ("<answer>grasper retract gallbladder</answer>", {GR}),  # spaced, no commas
        ('<answer>[["grasper", "retract", "gallbladder"]]</answer>', {GR}),
        ('<answer>[{"instrument": "hook", "verb": "dissect", "target": "cystic plate"}]</answer>', {HK}),
        ("Final answer: grasper,retract,gallbladder", {GR}),  # missing tags
        ("<answer>none</answer>", set()),
        ("<answer>No triplets.</answer>", set()),
        ("<answer></answer>", None),
        ("<answer>grasper,retract,moon</answer>", None),  # unknown target
        ("<answer>scissors,pack,liver</answer>", None),  # known words, not one of the 100 triplets
        (f"<answer>{GR}; hook dissects</answer>", None),  # one unreadable item fails the answer
        ("<answer>CalotTriangleDissection</answer>", None),
        ("<think>I see a grasper</think>", None),
    ],
)
def test_parse_label_set(answer: str, expected: set[str] | None) -> None:
    got = parse_label_set(answer, VOCAB)
    assert (None if got is None else set(got)) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<answer>C1: yes; C2: no; C3: yes</answer>", (True, False, True)),
        ("<answer>c3 = no, c1 = YES, c2 = no</answer>", (True, False, False)),  # any order, case
        ("<answer>C1 achieved, C2 not achieved, C3 not met</answer>", (True, False, False)),
        ('<answer>{"C1": true, "C2": false, "C3": 1}</answer>', (True, False, True)),
        ("<answer>two structures: yes; hepatocystic triangle: yes; cystic plate: no</answer>", (True, True, False)),
        ("Answer: yes, no, no", (True, False, False)),  # bare, in the grammar's order
        ("<answer>C1: yes; C2: no</answer>", None),  # a criterion missing
        ("<answer>C1: yes; C1: no; C3: yes</answer>", None),  # a criterion twice
        ("<answer>C1: maybe; C2: no; C3: no</answer>", None),
        ("<answer>C4: yes; C2: no; C3: no</answer>", None),
        ("<answer>yes, no</answer>", None),
        ("<answer>Preparation</answer>", None),
    ],
)
def test_parse_yes_no(answer: str, expected: tuple[bool, ...] | None) -> None:
    assert parse_yes_no(answer, CVS) == expected


def _box(label: str, *xyxy: float) -> LabelledBox:
    return LabelledBox(label, *xyxy)


@pytest.mark.parametrize(
    ("answer", "size", "expected"),
    [
        (
            "<answer>grasper [0.1, 0.2, 0.4, 0.6]; hook [0.5, 0.5, 0.9, 0.9]</answer>",
            None,
            [_box("grasper", 0.1, 0.2, 0.4, 0.6), _box("hook", 0.5, 0.5, 0.9, 0.9)],
        ),
        ("<answer>Grasping forceps: (32, 48), (128, 144)</answer>", (320, 240), [_box("grasper", 0.1, 0.2, 0.4, 0.6)]),
        (
            '<answer>[{"bbox_2d": [160, 120, 320, 240], "label": "Clip applier"}]</answer>',
            (320, 240),
            [_box("clipper", 0.5, 0.5, 1.0, 1.0)],
        ),
        ("<answer>the box of the hook is [0.5, 0.5, 0.9, 0.9]</answer>", None, [_box("hook", 0.5, 0.5, 0.9, 0.9)]),
        ("<answer>none</answer>", None, []),
        ("<answer>grasper (32, 48), (128, 144)</answer>", None, None),  # pixels without the image size: never assumed
        ("<answer>moon [0.1, 0.1, 0.2, 0.2]</answer>", None, None),  # unknown label
        ("<answer>grasper [0.4, 0.1, 0.2, 0.2]</answer>", None, None),  # x2 < x1
        ("<answer>grasper [0.1, 0.1, 0.2, 0.2] and a hook</answer>", None, None),  # a label without a box
        ("<answer>GallbladderDissection</answer>", None, None),
    ],
)
def test_parse_boxes(answer: str, size: tuple[int, int] | None, expected: list[LabelledBox] | None) -> None:
    got = parse_boxes(answer, TOOLS, size)
    if expected is None:
        assert got is None
    else:
        assert got is not None and len(got) == len(expected)
        for g, e in zip(got, expected, strict=False):
            assert g.label == e.label and g.xyxy == pytest.approx(e.xyxy)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<answer>dissecting</answer>", "dissect"),
        ("<answer>Null verb</answer>", "null_verb"),
        ("<answer>suction</answer>", "aspirate"),
    ],
)
def test_action_answers_use_the_single_label_parser(answer: str, expected: str) -> None:
    assert parse_single_label(answer, AliasIndex.of(load_task("action"))) == expected
