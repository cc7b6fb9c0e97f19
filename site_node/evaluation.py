"""Evaluate a protocol's tasks on the local store: sample frames, generate, score candidates, then score per video."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protocols.errors import DataError
from protocols.study import StudyProtocol, TaskPlan
from site_node.checkpoint import VideoCheckpoint
from site_node.datasets.frames import check_frames
from site_node.grounding import GroundingRuntime, SourceAnswers, reuses_answers
from site_node.metrics.bootstrap import Estimate
from site_node.model import openai_backend
from site_node.model.loading import LoadedModel
from site_node.model.openai_backend import OpenAIModel
from site_node.model.pipeline import BatchRunner, EvalRequest, answer_videos
from site_node.model.prefetch import FramePrefetcher, VideoJob
from site_node.scoring import Record, TaskScore, VideoLabels, score_records, task_seed
from site_node.store import DataStore, FrameLabels, VideoEntry
from site_node.task_runtime import TaskRuntime, runtime_for

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # task, frames done, frames total
Model = LoadedModel | OpenAIModel  # [model] backend = "hf" | "openai"


@dataclass
class TaskOutcome:
    estimates: dict[str, Estimate]
    n_videos: int
    skipped: dict[str, str] = field(default_factory=dict)  # video id -> reason (local only)
    score: TaskScore | None = None  # the full local result (what `site_node score` reproduces)
    records: list[Record] = field(default_factory=list)  # the answers (local only), re-read by grounding
    labels: list[VideoLabels] = field(default_factory=list)  # what they were scored against (local only)


@dataclass(frozen=True)
class _Video:
    dataset: str
    entry: VideoEntry
    labels: FrameLabels


def _labelled_videos(rt: TaskRuntime, store: DataStore) -> tuple[list[_Video], dict[str, str]]:
    ready, skipped = [], {}
    for ds in store.datasets():
        for video in (v for v in ds.videos if rt.label_kind.value in v.labels):
            try:
                labels = rt.load_labels(store, video)
                check_frames(
                    labels,
                    store.path(video.video),
                    store.path(video.labels[rt.label_kind.value]),
                    fps=video.fps,
                    n_frames=video.n_frames,
                )
                ready.append(_Video(ds.dataset_id, video, labels))
            except DataError as exc:
                skipped[f"{ds.dataset_id}/{video.video_id}"] = str(exc)
                log.warning("skipping video %s: %s", video.video_id, exc)
    if not ready:
        raise DataError(
            f"the data store has no usable videos with {rt.label_kind.value} labels"
            + (f" ({len(skipped)} skipped)" if skipped else "; run `site_node ingest` first")
        )
    return ready, skipped


def select_frames(frames: list[int], fps: float, every_s: float) -> list[int]:
    """The first labelled frame at or after each multiple of `every_s` seconds (all frames of sparse labels)."""
    out: list[int] = []
    next_t = 0.0
    for f in sorted(frames):
        t = f / fps
        if t >= next_t - 1e-9:
            out.append(f)
            next_t = (math.floor(t / every_s + 1e-9) + 1) * every_s
    return out


def _jobs(store: DataStore, videos: list[_Video], chosen: list[list[int]]) -> list[VideoJob]:
    return [
        VideoJob(store.path(v.entry.video), v.labels, tuple(f), v.entry.fps)
        for v, f in zip(videos, chosen, strict=True)
    ]


def evaluate_task(
    lm: Model,
    store: DataStore,
    plan: TaskPlan,
    *,
    batch_size: int,
    seed: int,
    replicates: int,
    predictions: Path | None = None,
    progress: Progress | None = None,
    prefetcher: FramePrefetcher | None = None,
    runner: BatchRunner | None = None,
) -> TaskOutcome:
    """Run one task over every labelled video; per-frame answers go only to the local predictions file.

    Frames are batched across videos (prepared by `prefetcher`'s worker processes when given; answered by `runner`'s
    model copies on several devices when given; by the site's model server with the openai backend). With a
    predictions file, each finished video is checkpointed, and videos a previous run finished are not evaluated again.
    """
    rt = runtime_for(plan.name)
    if hasattr(rt, "frame_interval_s"):  # the phase task's relaxed boundary is counted in scored frames
        rt.frame_interval_s = plan.sample_every_s
    videos, skipped = _labelled_videos(rt, store)
    chosen = [select_frames(list(v.labels.labels), v.labels.fps or v.entry.fps, plan.sample_every_s) for v in videos]
    total = sum(len(c) for c in chosen)
    ckpt = VideoCheckpoint(predictions) if predictions else None
    saved = ckpt.finished(plan.name) if ckpt else {}
    todo = [i for i, v in enumerate(videos) if (v.dataset, v.entry.video_id) not in saved]
    records = [r for i, v in enumerate(videos) if i not in todo for r in saved[(v.dataset, v.entry.video_id)]]
    done = sum(len(chosen[i]) for i in range(len(videos)) if i not in todo)
    req = EvalRequest(rt.task.render_prompt(), rt.candidates(), plan.max_new_tokens, batch_size)
    pending: dict[int, list[Record]] = {k: [] for k in range(len(todo))}
    jobs = _jobs(store, [videos[i] for i in todo], [chosen[i] for i in todo])
    if isinstance(lm, OpenAIModel):  # no candidate scores: AP from the hard predictions, as the metrics say
        answers = openai_backend.answer_videos(lm, jobs, req)
    else:
        answers = answer_videos(lm, jobs, req, prefetcher, runner)
    for k, frame, answer in answers:
        video = videos[todo[k]]
        pending[k].append(Record(video.entry.video_id, frame, answer, video.dataset, plan.name))
        if len(pending[k]) == len(jobs[k].frames):  # the video is complete: checkpoint it
            records.extend(pending[k])
            if ckpt:
                ckpt.commit(plan.name, video.dataset, video.entry.video_id, pending.pop(k))
            done += len(jobs[k].frames)
            if progress:
                progress(plan.name, done, total)
    records.extend(r for rest in pending.values() for r in rest)  # a video that decoded short: scored, not marked
    labels = [VideoLabels(v.dataset, v.entry.video_id, v.labels) for v in videos]
    score = score_records(rt, labels, records, seed=seed, replicates=replicates, skipped=skipped)
    first = next(iter(score.estimates.values()))
    return TaskOutcome(score.estimates, first.n_videos, skipped, score, records, labels)


def ground_task(
    store: DataStore, plan: TaskPlan, outcomes: dict[str, TaskOutcome], *, seed: int, replicates: int
) -> TaskOutcome:
    """A task that generates nothing: it re-reads the answers the tasks before it stored (reasoning grounding)."""
    rt = GroundingRuntime(plan.definition)
    sources = {
        name: SourceAnswers(runtime_for(name), o.records, o.labels)
        for name, o in outcomes.items()
        if name in rt.sources
    }
    score = rt.evaluate(store, sources, seed=seed, replicates=replicates)
    first = next(iter(score.estimates.values()))
    return TaskOutcome(score.estimates, first.n_videos, {}, score)


def evaluate_tasks(
    lm: Model,
    store: DataStore,
    protocol: StudyProtocol,
    *,
    batch_size: int,
    predictions: Path | None = None,
    progress: Progress | None = None,
    prefetcher: FramePrefetcher | None = None,
    runner: BatchRunner | None = None,
) -> tuple[dict[str, TaskOutcome], dict[str, str]]:
    """Every task the store has labels for, in the protocol's order (tasks that re-read answers after the
    others); a task without usable data is left out and its reason returned."""
    outcomes: dict[str, TaskOutcome] = {}
    failures: dict[str, str] = {}
    for plan in sorted(protocol.tasks, key=lambda p: reuses_answers(p.definition)):
        seed, replicates = task_seed(protocol, plan.name), protocol.privacy.bootstrap_replicates
        try:
            if reuses_answers(plan.definition):
                outcomes[plan.name] = ground_task(store, plan, outcomes, seed=seed, replicates=replicates)
            else:
                outcomes[plan.name] = evaluate_task(
                    lm,
                    store,
                    plan,
                    batch_size=batch_size,
                    seed=seed,
                    replicates=replicates,
                    predictions=predictions,
                    progress=progress,
                    prefetcher=prefetcher,
                    runner=runner,
                )
        except DataError as exc:
            failures[plan.name] = str(exc)
            log.warning("task %s not run: %s", plan.name, exc)
    return {p.name: outcomes[p.name] for p in protocol.tasks if p.name in outcomes}, failures


def evaluate_protocol(
    lm: Model,
    store: DataStore,
    protocol: StudyProtocol,
    *,
    batch_size: int,
    predictions: Path | None = None,
    progress: Progress | None = None,
    prefetcher: FramePrefetcher | None = None,
    runner: BatchRunner | None = None,
) -> dict[str, TaskOutcome]:
    """Every task the store has labels for; a task without usable data is left out (logged), all missing fails."""
    outcomes, failures = evaluate_tasks(
        lm,
        store,
        protocol,
        batch_size=batch_size,
        predictions=predictions,
        progress=progress,
        prefetcher=prefetcher,
        runner=runner,
    )
    if not outcomes:
        raise DataError("; ".join(f"{task}: {reason}" for task, reason in failures.items()))
    return outcomes
