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
    phase: str, tools: Sequence[str] | None = None, relation: str | None = None, cvs_achieved: bool | None = None
) -> str:
    """Surg-R1's answer: L1 (instruments), L2 (tool-tissue-action), L3 (phase and, where labelled, the
    critical view of safety), then the final answer (the phase).

    A level is written only when labels support it; inventing an L2 without triplets would teach the model
    statements nobody annotated. The tiny model's warm-up writes its targets with this same function, so
    fine-tuning at a site refines what the model sees instead of re-teaching it the answer's layout.
    """
    levels = []
    if tools is not None:
        levels.append(f"L1: {', '.join(tools) if tools else 'no instrument'}.")
    if relation:
        levels.append(f"L2: {relation}.")
    safety = "" if cvs_achieved is None else f", critical view of safety {'' if cvs_achieved else 'not '}achieved"
    levels.append(f"L3: {phase}{safety}.")
    return f"<think>{' '.join(levels)}</think><answer>{phase}</answer>"
