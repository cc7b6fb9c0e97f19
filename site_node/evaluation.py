"""Evaluate a protocol's tasks on the local store: sample frames, generate, parse, score per video."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from protocols.errors import DataError
from protocols.study import StudyProtocol, TaskPlan
from site_node.metrics.bootstrap import Estimate
from site_node.model.generate import generate_answers
from site_node.model.loading import LoadedModel
from site_node.store import DataStore, VideoEntry
from site_node.task_runtime import TaskRuntime, runtime_for
from site_node.video import sample_frames

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # task, frames done, frames total


@dataclass
class TaskOutcome:
    estimates: dict[str, Estimate]
    n_videos: int
    skipped: dict[str, str] = field(default_factory=dict)  # video id -> reason (local only)


def _labelled_videos(rt: TaskRuntime, store: DataStore) -> tuple[list[tuple[VideoEntry, dict[int, Any]]], dict[str, str]]:
    ready, skipped = [], {}
    for video in store.videos_with(rt.label_kind):
        try:
            labels = rt.load_labels(store, video)
            beyond = [f for f in labels if not 0 <= f < video.n_frames]
            if beyond:
                raise DataError(f"{video.labels[rt.label_kind]}: frame {beyond[0]} is beyond the video's {video.n_frames} frames")
            ready.append((video, labels))
        except DataError as exc:
            skipped[video.video_id] = str(exc)
            log.warning("skipping video %s: %s", video.video_id, exc)
    if not ready:
        raise DataError(f"the data store has no usable videos with {rt.label_kind} labels" +
                        (f" ({len(skipped)} skipped)" if skipped else "; run `site_node ingest` first"))
    return ready, skipped


def evaluate_task(
    lm: LoadedModel, store: DataStore, plan: TaskPlan, *, batch_size: int, seed: int, replicates: int,
    predictions: Path | None = None, progress: Progress | None = None,
) -> TaskOutcome:
    """Run one task over every labelled video; per-frame answers go only to the local predictions file."""
    rt = runtime_for(plan.name)
    videos, skipped = _labelled_videos(rt, store)
    prompt = rt.task.render_prompt()
    steps = {v.video_id: max(1, round(v.fps * plan.sample_every_s)) for v, _ in videos}
    total = sum(len([f for f in labels if f % steps[v.video_id] == 0]) for v, labels in videos)
    done, pairs = 0, []
    out = predictions.open("a", encoding="utf-8") if predictions else None
    try:
        for video, labels in videos:
            frames = [(i, img) for i, img in sample_frames(store.path(video.video), steps[video.video_id]) if i in labels]
            answers = generate_answers(lm, [img for _, img in frames], prompt,
                                       max_new_tokens=plan.max_new_tokens, batch_size=batch_size)
            pairs.append(([labels[i] for i, _ in frames], [rt.parse(a) for a in answers]))
            if out:
                for (i, _), answer in zip(frames, answers):
                    out.write(json.dumps({"task": plan.name, "video": video.video_id, "frame": i, "answer": answer}) + "\n")
            done += len(frames)
            if progress:
                progress(plan.name, done, total)
    finally:
        if out:
            out.close()
    pairs = [p for p in pairs if p[0]]
    return TaskOutcome(rt.summarise(pairs, seed=seed, replicates=replicates), len(pairs), skipped)


def evaluate_protocol(
    lm: LoadedModel, store: DataStore, protocol: StudyProtocol, *, batch_size: int,
    predictions: Path | None = None, progress: Progress | None = None,
) -> dict[str, TaskOutcome]:
    return {
        plan.name: evaluate_task(
            lm, store, plan, batch_size=batch_size, seed=protocol.bootstrap_seed + 1000 * i,
            replicates=protocol.privacy.bootstrap_replicates, predictions=predictions, progress=progress,
        )
        for i, plan in enumerate(protocol.tasks)
    }
