"""The grounding task on site: re-reads the answers other tasks stored and joins each frame's labels to them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocols.errors import ConfigError, DataError
from protocols.tasks import AnswerKind, TaskDefinition, available_tasks, load_task
from site_node.datasets.cholec80 import read_tool_file, tool_file_for
from site_node.metrics import grounding as metrics
from site_node.reasoning import Levels, ReasoningReader
from site_node.scoring import Record, TaskScore, VideoLabels
from site_node.store import DataStore, FrameLabels, LabelKind, VideoEntry
from site_node.task_runtime import Answer, TaskRuntime, runtime_for


def reuses_answers(task: TaskDefinition) -> bool:
    """A task that generates nothing and reads the answers of the tasks before it."""
    return task.answer_kind is AnswerKind.REASONING


@dataclass(frozen=True)
class SourceAnswers:
    """One source task's answers and the labels they were scored against; both stay on site."""

    runtime: TaskRuntime
    records: Sequence[Record]
    labels: Sequence[VideoLabels]


@dataclass
class _FrameIndex:
    """One video's other labels by decoded-frame index: triplets (or Cholec80 tools) and phases."""

    triplets: dict[int, frozenset[str]] = field(default_factory=dict)
    tools: dict[int, tuple[str, ...]] = field(default_factory=dict)
    phases: dict[int, str] = field(default_factory=dict)


def _at_or_before(rows: dict[int, Any], frame: int) -> Any:
    """The last row at or before a frame: Cholec80 tool rows (every 25th frame) hold until the next row."""
    keys = sorted(rows)
    i = bisect.bisect_right(keys, frame) - 1
    return rows[keys[i]] if i >= 0 else None


def _by_video_frame(fl: FrameLabels, fps: float) -> dict[int, Any]:
    return {fl.video_frame(f, fps): v for f, v in fl.labels.items()}


class GroundingRuntime:
    """Settings from the task definition (validated here), the reasoning reader, and the case builder."""

    def __init__(self, task: TaskDefinition) -> None:
        self.task = task
        extra, where = task.extra, f"task {task.name}: extra"
        sources = extra.get("sources")
        known = set(available_tasks()) - {task.name}
        if not isinstance(sources, list) or not sources or not all(s in known for s in sources):
            raise ConfigError(f"{where}.sources must list tasks from {sorted(known)}, got {sources!r}")
        self.sources: tuple[str, ...] = tuple(sources)
        need = extra.get("min_instrument_f1")
        if not isinstance(need, (int, float)) or isinstance(need, bool) or not 0 < need <= 1 or math.isnan(need):
            raise ConfigError(f"{where}.min_instrument_f1 must be a number in (0, 1], got {need!r}")
        self.min_instrument_f1 = float(need)
        names = {m.name for m in task.metrics}
        if names != set(metrics.GROUNDING_METRICS):
            raise ConfigError(
                f"task {task.name}: metrics must be {list(metrics.GROUNDING_METRICS)}, got {sorted(names)}"
            )
        for key in ("triplet_task", "phase_task"):
            if extra.get(key) not in known:
                raise ConfigError(f"{where}.{key} must name a task from {sorted(known)}, got {extra.get(key)!r}")
        self.phase_task, self.triplet_task = str(extra["phase_task"]), str(extra["triplet_task"])
        self.reader = ReasoningReader.of(load_task(self.triplet_task), load_task(self.phase_task))
        self._instruments = self.reader.vocab.instrument

    # -- the labels of a frame -----------------------------------------------------------------------------
    def _index(self, store: DataStore, video: VideoEntry) -> _FrameIndex:
        out = _FrameIndex()
        if LabelKind.TRIPLET.value in video.labels:
            out.triplets = _by_video_frame(runtime_for(self.triplet_task).load_labels(store, video), video.fps)
        elif LabelKind.PHASE.value in video.labels and (path := tool_file_for(store, video)) is not None:
            out.tools = _by_video_frame(FrameLabels(read_tool_file(path)), video.fps)
        if LabelKind.PHASE.value in video.labels:
            out.phases = _by_video_frame(runtime_for(self.phase_task).load_labels(store, video), video.fps)
        return out

    def _truth(self, index: _FrameIndex, frame: int) -> dict[str, Any]:
        """The frame's instruments, targets and acting triplets (where labelled) and phase."""
        out: dict[str, Any] = {"phase": index.phases.get(frame)}
        if frame in index.triplets:
            parts = [t.split(",") for t in index.triplets[frame]]
            out["instruments"] = frozenset(p[0] for p in parts)
            out["targets"] = frozenset(p[2] for p in parts if p[2] != "null_target")
            out["triplets"] = frozenset(",".join(p) for p in parts if p[1] != "null_verb")  # idle: no relation
        elif (row := _at_or_before(index.tools, frame)) is not None:  # Cholec80 tools: instruments only
            found = (self._instruments.canonical(t) for t in row)  # (the specimen bag is no instrument)
            out["instruments"] = frozenset(n for n in found if n is not None)
        return out

    # -- one answer ------------------------------------------------------------------------------------------
    def _consistency(self, rt: TaskRuntime, parsed: Any, levels: Levels) -> metrics.Consistency:
        said: str | bool | None
        if rt.task.name == self.phase_task:
            said = levels.phase
        elif rt.task.answer_kind is AnswerKind.YES_NO_SET:
            said, parsed = levels.cvs, None if parsed is None else all(parsed)
        else:
            return metrics.Consistency.NOT_APPLICABLE
        if parsed is None:
            return metrics.Consistency.ANSWER_UNREAD
        return metrics.Consistency.AGREES if said == parsed else metrics.Consistency.DISAGREES

    def case(self, rt: TaskRuntime, truth: Any, answer: Answer, frame_truth: Mapping[str, Any]) -> metrics.Case:
        """One answer as a grounding case: its levels, whether its final answer is right, and the frame's labels."""
        levels = self.reader.read(answer.text)
        parsed = rt.parse(answer)
        return metrics.Case(
            levels, parsed is not None and parsed == truth, self._consistency(rt, parsed, levels), **frame_truth
        )

    # -- a site's answers ------------------------------------------------------------------------------------
    def evaluate(
        self, store: DataStore, sources: Mapping[str, SourceAnswers], *, seed: int, replicates: int
    ) -> TaskScore:
        """Every stored answer of the source tasks, grouped by video (the bootstrap's cluster)."""
        used = {name: s for name, s in sources.items() if name in self.sources and s.records}
        if not used:
            raise DataError(f"{self.task.name} re-reads the answers of {list(self.sources)}; none of them ran here")
        entries = {(d.dataset_id, v.video_id): v for d in store.datasets() for v in d.videos}
        indexes: dict[tuple[str, str], _FrameIndex] = {}
        videos: dict[tuple[str, str], list[metrics.Case]] = {}
        for src in used.values():
            labels = {(v.dataset, v.video): v.labels for v in src.labels}
            for rec in src.records:
                key = (str(rec.dataset), rec.video)
                entry, fl = entries.get(key), labels.get(key)
                if entry is None or fl is None or rec.frame not in fl.labels:
                    continue
                if key not in indexes:
                    indexes[key] = self._index(store, entry)
                frame_truth = self._truth(indexes[key], fl.video_frame(rec.frame, entry.fps))
                videos.setdefault(key, []).append(self.case(src.runtime, fl.labels[rec.frame], rec.answer, frame_truth))
        estimates = metrics.summarise(
            [videos[k] for k in sorted(videos)],
            seed=seed,
            replicates=replicates,
            min_instrument_f1=self.min_instrument_f1,
        )
        return TaskScore(self.task.name, self.task.headline, estimates, seed, replicates)
