"""Per-task runtime: which labels a task reads, how its answers parse and score, and how it is summarised."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from protocols.errors import ConfigError
from protocols.tasks import TaskDefinition, load_task
from site_node.answers import YesNoGrammar, parse_boxes, parse_label_set, parse_yes_no
from site_node.datasets.registry import read_labels
from site_node.labels import AliasIndex, TripletVocabulary
from site_node.metrics import action as action_metrics
from site_node.metrics import cvs as cvs_metrics
from site_node.metrics import localization as loc_metrics
from site_node.metrics import phase as phase_metrics
from site_node.metrics import phase_relaxed
from site_node.metrics import triplet as triplet_metrics
from site_node.metrics.bootstrap import Estimate
from site_node.parsing import parse_single_label
from site_node.store import DataStore, FrameLabels, LabelKind, VideoEntry


@dataclass(frozen=True)
class Answer:
    """One frame's model output: the text, the candidates' log-probabilities (if scored) and the image size it saw."""

    text: str
    logprobs: Mapping[str, float] | None = None
    size: tuple[int, int] | None = None


# Per video, per frame: (ground truth, answer).
ScoredVideos = Sequence[Sequence[tuple[Any, Answer]]]


class TaskRuntime(Protocol):
    task: TaskDefinition
    label_kind: LabelKind

    def load_labels(self, store: DataStore, video: VideoEntry) -> FrameLabels: ...

    def parse(self, answer: Answer) -> Any: ...

    def candidates(self) -> dict[str, str]: ...

    def summarise(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]: ...


def softmax_scores(answer: Answer, keys: Sequence[str]) -> np.ndarray | None:
    """Probabilities over the candidates from their log-probabilities; None unless every candidate was scored."""
    if answer.logprobs is None or any(k not in answer.logprobs for k in keys):
        return None
    lp = np.array([answer.logprobs[k] for k in keys], dtype=float)
    if not np.all(np.isfinite(lp)):
        return None
    e = np.exp(lp - lp.max())
    return e / e.sum()


@dataclass
class _Base:
    task: TaskDefinition
    label_kind: LabelKind = LabelKind.PHASE

    def load_labels(self, store: DataStore, video: VideoEntry) -> FrameLabels:
        return read_labels(self.label_kind, store.path(video.labels[self.label_kind.value]), self.task, video.video_id)

    def candidates(self) -> dict[str, str]:
        """Candidate key -> the text that follows the model's '<answer>'; empty when the task is not scored."""
        return {}

    @property
    def scored(self) -> bool:
        return bool(self.task.extra.get("candidate_scores", False))

    def parse(self, answer: Answer) -> Any:
        raise NotImplementedError

    def _summary(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        raise NotImplementedError

    def summarise(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        """The task's metrics (an unreadable answer is a wrong one), plus its sensitivity metrics recomputed on
        the frames whose answer could be read, as <metric>_parseable."""
        out = self._summary(videos, seed=seed, replicates=replicates)
        if self.task.sensitivity:
            kept = [[(t, a) for t, a in v if self.parse(a) is not None] for v in videos]
            kept = [v for v in kept if v]
            again = self._summary(kept, seed=seed, replicates=replicates) if kept else {}
            out.update({f"{m}_parseable": again[m] for m in self.task.sensitivity if m in again})
        return out


@dataclass
class PhaseRuntime(_Base):
    label_kind: LabelKind = LabelKind.PHASE
    metrics: ClassVar[Any] = phase_metrics  # the metrics module; single-label tasks differ only in it

    frame_interval_s: float = 1.0  # seconds between the scored frames (the protocol's sample_every_s)

    def __post_init__(self) -> None:
        self._mapper = AliasIndex.of(self.task)

    def parse(self, answer: Answer) -> str | None:
        return parse_single_label(answer.text, self._mapper)

    def _summary(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        pairs = [([t for t, _ in v], [self.parse(a) for _, a in v]) for v in videos]
        out: dict[str, Estimate] = self.metrics.summarise(pairs, seed=seed, replicates=replicates)
        boundary = self.task.extra.get("relaxed_boundary_s")
        if boundary and pairs:  # the Cholec80-script-compatible variant, as named *_relaxed metrics
            window = max(1, round(float(boundary) / self.frame_interval_s))
            names = self.task.label_names
            out |= phase_relaxed.summarise(pairs, names, window=window, seed=seed + 50, replicates=replicates)
        return out


@dataclass
class ActionRuntime(PhaseRuntime):
    label_kind: LabelKind = LabelKind.ACTION
    metrics: ClassVar[Any] = action_metrics

    def candidates(self) -> dict[str, str]:
        return {name: f"{name}</answer>" for name in self.task.label_names} if self.scored else {}


@dataclass
class TripletRuntime(_Base):
    label_kind: LabelKind = LabelKind.TRIPLET

    def __post_init__(self) -> None:
        self._vocab = TripletVocabulary.of(self.task)

    def parse(self, answer: Answer) -> frozenset[str] | None:
        return parse_label_set(answer.text, self._vocab)

    def candidates(self) -> dict[str, str]:
        return {name: f"{name}</answer>" for name in self.task.label_names} if self.scored else {}

    def _summary(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        names = self.task.label_names
        data = []
        for v in videos:
            scores = [softmax_scores(a, names) for _, a in v]
            known = [s for s in scores if s is not None]  # scores only where the model scored every frame
            stacked = np.stack(known) if known and len(known) == len(scores) else None
            data.append(triplet_metrics.TripletVideo([t for t, _ in v], [self.parse(a) for _, a in v], stacked))
        return triplet_metrics.summarise(data, names, seed=seed, replicates=replicates)


@dataclass
class CvsRuntime(_Base):
    label_kind: LabelKind = LabelKind.CVS
    _combos: list[tuple[bool, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._grammar = YesNoGrammar.of(self.task)
        self._combos = list(itertools.product((True, False), repeat=len(self.task.label_names)))

    def parse(self, answer: Answer) -> tuple[bool, ...] | None:
        return parse_yes_no(answer.text, self._grammar)

    def _key(self, combo: tuple[bool, ...]) -> str:
        return ",".join("yes" if c else "no" for c in combo)

    def candidates(self) -> dict[str, str]:
        """Every yes/no combination in the answer grammar; P(criterion) is the mass of those answering yes."""
        if not self.scored:
            return {}
        names = self.task.label_names
        return {
            self._key(c): "; ".join(f"{n}: {'yes' if v else 'no'}" for n, v in zip(names, c, strict=False))
            + "</answer>"
            for c in self._combos
        }

    def criterion_scores(self, answer: Answer) -> np.ndarray | None:
        probs = softmax_scores(answer, [self._key(c) for c in self._combos])
        return None if probs is None else np.array(self._combos, dtype=float).T @ probs

    def _summary(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        data = []
        for v in videos:
            scores = [self.criterion_scores(a) for _, a in v]
            known = [s for s in scores if s is not None]  # scores only where the model scored every frame
            stacked = np.stack(known) if known and len(known) == len(scores) else None
            data.append(cvs_metrics.CvsVideo([t for t, _ in v], [self.parse(a) for _, a in v], stacked))
        return cvs_metrics.summarise(data, len(self.task.label_names), seed=seed, replicates=replicates)


@dataclass
class LocalizationRuntime(_Base):
    label_kind: LabelKind = LabelKind.BOXES

    def __post_init__(self) -> None:
        self._index = AliasIndex.of(self.task)
        self._threshold = float(self.task.extra.get("iou_threshold", 0.5))
        if not 0 < self._threshold < 1 or math.isnan(self._threshold):
            raise ConfigError(f"task {self.task.name}: extra.iou_threshold must be in (0, 1), got {self._threshold}")

    def parse(self, answer: Answer) -> list[Any] | None:
        return parse_boxes(answer.text, self._index, answer.size)

    def _summary(self, videos: ScoredVideos, *, seed: int, replicates: int) -> dict[str, Estimate]:
        data = [loc_metrics.BoxVideo([t for t, _ in v], [self.parse(a) for _, a in v]) for v in videos]
        return loc_metrics.summarise(data, threshold=self._threshold, seed=seed, replicates=replicates)


_FACTORIES: dict[str, Callable[[TaskDefinition], TaskRuntime]] = {
    "phase": PhaseRuntime,
    "action": ActionRuntime,
    "triplet": TripletRuntime,
    "cvs": CvsRuntime,
    "localization": LocalizationRuntime,
}


def runtime_for(task_name: str) -> TaskRuntime:
    try:
        factory = _FACTORIES[task_name]
    except KeyError:
        raise ConfigError(f"this site node cannot run task {task_name!r}; it runs {sorted(_FACTORIES)}") from None
    return factory(load_task(task_name))
