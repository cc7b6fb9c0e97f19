"""GRPO rewards from a site's own labels: one per RewardKind, read with the tasks' own parsers and vocabularies."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from protocols.errors import ConfigError
from protocols.grpo import RewardKind
from protocols.tasks import load_task
from site_node.labels import LabelledBox
from site_node.metrics.localization import frame_ious
from site_node.reasoning import Levels, ReasoningReader, mentions
from site_node.task_runtime import Answer, TaskRuntime, runtime_for


@dataclass(frozen=True)
class FrameTruth:
    """One training frame's labels; None where the site has no such label (that reward is then left out)."""

    phase: str | None = None
    tools: tuple[str, ...] | None = None  # Cholec80 tool words (L1)
    triplets: frozenset[str] | None = None  # canonical 'instrument,verb,target'
    cvs: tuple[bool, ...] | None = None  # C1, C2, C3
    boxes: tuple[LabelledBox, ...] | None = None


def set_f1(truth: frozenset[str], pred: frozenset[str]) -> float:
    """F1 of two sets; two empty sets agree fully."""
    if not truth and not pred:
        return 1.0
    hits = len(truth & pred)
    return 2.0 * hits / (len(truth) + len(pred))


class Rewarder:
    """Reward components of completions answering one task's prompt (`task`), against each frame's labels.

    The task's own answer is read with its runtime's parser (phase, triplet, CVS, localization); what a prompt
    does not ask for is read from the reasoning levels: L1 instruments, L2 triplets, L3's CVS statement.
    """

    def __init__(self, task: str, weights: Mapping[RewardKind, float]) -> None:
        self.task = load_task(task)
        if self.task.reward is None:
            raise ConfigError(f"task {task!r} declares no reward (`reward:` in its definition); GRPO cannot train it")
        self.runtime: TaskRuntime = runtime_for(task)
        self.reader = ReasoningReader.of(load_task("triplet"), load_task("phase"))
        self.weights = dict(weights)
        self._kinds: dict[RewardKind, Callable[[str, Levels, FrameTruth], float | None]] = {
            RewardKind.FORMAT: self.format,
            RewardKind.PHASE: self.phase,
            RewardKind.TRIPLET: self.triplet,
            RewardKind.CVS: self.cvs,
            RewardKind.LOCALIZATION: self.localization,
            RewardKind.GROUNDING: self.grounding,
        }

    def _answer(self, text: str, kind: RewardKind) -> object | None:
        """The parsed final answer when this task's reward is `kind`, else None (read from the reasoning)."""
        return self.runtime.parse(Answer(text)) if self.task.reward is kind else None

    def format(self, text: str, levels: Levels, truth: FrameTruth) -> float:
        """1 when the levels and the final answer are present and readable. L2 is required where the frame has
        triplet labels: the answer format writes a level only when labels support it (answer_format.py)."""
        l2 = levels.relations is not None or truth.triplets is None
        return float(
            levels.instruments is not None and l2 and levels.l3_read and self.runtime.parse(Answer(text)) is not None
        )

    def phase(self, text: str, levels: Levels, truth: FrameTruth) -> float | None:
        if truth.phase is None:
            return None
        said = self._answer(text, RewardKind.PHASE) if self.task.reward is RewardKind.PHASE else levels.phase
        return float(said == truth.phase)

    def triplet(self, text: str, levels: Levels, truth: FrameTruth) -> float | None:
        if truth.triplets is None:
            return None
        said = self._answer(text, RewardKind.TRIPLET) if self.task.reward is RewardKind.TRIPLET else levels.relations
        return 0.0 if not isinstance(said, frozenset) else set_f1(truth.triplets, said)

    def cvs(self, text: str, levels: Levels, truth: FrameTruth) -> float | None:
        """Per-criterion accuracy; from L3 ('achieved' or not) all criteria take the stated value."""
        if truth.cvs is None:
            return None
        if self.task.reward is RewardKind.CVS:
            said = self._answer(text, RewardKind.CVS)
            if not isinstance(said, tuple) or len(said) != len(truth.cvs):
                return 0.0
            return float(np.mean([a == b for a, b in zip(said, truth.cvs, strict=True)]))
        if levels.cvs is None:
            return 0.0
        return float(np.mean([levels.cvs == b for b in truth.cvs]))

    def localization(self, text: str, levels: Levels, truth: FrameTruth) -> float | None:
        """Mean IoU of the one-to-one matched boxes, unmatched ones (either side) 0: the metric's penalty."""
        if truth.boxes is None or self.task.reward is not RewardKind.LOCALIZATION:
            return None
        said = self._answer(text, RewardKind.LOCALIZATION)
        pred = said if isinstance(said, list) else None
        ious = frame_ious(list(truth.boxes), pred)
        return float(np.mean(ious)) if ious else 1.0  # neither side has a box: nothing to localise, correct

    def grounding(self, text: str, levels: Levels, truth: FrameTruth) -> float | None:
        """F1 of L1's instruments against the frame's instrument labels (tools, else the triplets' instruments)."""
        names = truth.tools
        if names is None and truth.triplets is not None:
            names = tuple(t.split(",")[0] for t in truth.triplets)
        if names is None:
            return None
        if levels.instruments is None:
            return 0.0
        (labelled,) = mentions(", ".join(names), self.reader.vocab.instrument)
        return set_f1(frozenset(labelled), levels.instruments)

    def components(self, text: str, truth: FrameTruth) -> dict[RewardKind, float]:
        """Every weighted component this frame's labels allow (missing labels leave theirs out)."""
        levels = self.reader.read(text)
        out = {}
        for kind in self.weights:
            value = self._kinds[kind](text, levels, truth)
            if value is not None:
                out[kind] = value
        return out

    def total(self, components: Mapping[RewardKind, float]) -> float:
        return float(sum(self.weights[k] * v for k, v in components.items()))

    def score(self, texts: Sequence[str], truth: FrameTruth) -> tuple[list[float], list[dict[RewardKind, float]]]:
        """Totals and components of a group of completions of one frame."""
        parts = [self.components(t, truth) for t in texts]
        return [self.total(p) for p in parts], parts
