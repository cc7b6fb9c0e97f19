"""Surg-R1's hierarchical answer text (L1 instruments, L2 tool-tissue-action, L3 phase), written from labels."""

from __future__ import annotations

from collections.abc import Sequence

from protocols.errors import DataError
from site_node.labels import normalise

# Cholec80 tool names -> the words an answer uses (matched by normalised name, never by column index).
TOOL_WORDS = {
    "grasper": "grasper",
    "bipolar": "bipolar",
    "hook": "hook",
    "scissors": "scissors",
    "clipper": "clipper",
    "irrigator": "irrigator",
    "specimenbag": "specimen bag",
}


def tool_word(name: str) -> str:
    """The answer word for a tool name such as 'SpecimenBag' or 'specimen_bag'."""
    word = TOOL_WORDS.get(normalise(name))
    if word is None:
        raise DataError(f"unknown tool {name!r}; expected one of {sorted(TOOL_WORDS)}")
    return word


def hierarchical_target(
    phase: str,
    tools: Sequence[str] | None = None,
    relation: str | None = None,
    cvs_achieved: bool | None = None,
    *,
    anatomy: Sequence[str] | None = None,
    answer: str | None = None,
) -> str:
    """Surg-R1's answer: L1 (instruments), L2 (tool-tissue-action), L3 (phase and, where labelled, the
    critical view of safety), then the final answer (the phase).

    A level is written only when labels support it; inventing an L2 without triplets would teach the model
    statements nobody annotated. The tiny model's warm-up writes its targets with this same function, so
    fine-tuning at a site refines what the model sees instead of re-teaching it the answer's layout.
    `anatomy` adds the structures seen to L1; `answer` is the final answer when the task asks for other than the
    phase (an action, triplets, the CVS criteria, boxes).
    """
    levels = []
    if tools is not None:
        seen = ", ".join(tools) if tools else "no instrument"
        levels.append(f"L1: {seen}{'; ' + ', '.join(anatomy) if anatomy else ''}.")
    if relation:
        levels.append(f"L2: {relation}.")
    safety = "" if cvs_achieved is None else f", critical view of safety {'' if cvs_achieved else 'not '}achieved"
    levels.append(f"L3: {phase}{safety}.")
    return f"<think>{' '.join(levels)}</think><answer>{phase if answer is None else answer}</answer>"
