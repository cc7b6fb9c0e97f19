"""Score a task's answers against labels with the engine's own metric code (`site_node score` and `evaluate`)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import DataError
from protocols.study import StudyProtocol
from site_node.datasets.frames import check_frames
from site_node.datasets.registry import read_labels, scan
from site_node.metrics.bootstrap import Estimate
from site_node.store import FrameLabels
from site_node.task_runtime import Answer, TaskRuntime


@dataclass(frozen=True)
class Record:
    """One prediction: which frame of which video (label-file numbering), and the model's answer."""

    video: str
    frame: int
    answer: Answer
    dataset: str | None = None
    task: str | None = None
    where: str = ""  # "file:line", for problems

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "dataset": self.dataset,
            "video": self.video,
            "frame": self.frame,
            "answer": self.answer.text,
        }
        if self.answer.logprobs is not None:
            out["logprobs"] = dict(self.answer.logprobs)
        if self.answer.size is not None:
            out["image_size"] = list(self.answer.size)
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class LabelSpec:
    """One dataset to score against: a folder (or label file), its format, and the name predictions use for it."""

    path: Path
    fmt: str
    dataset: str


@dataclass(frozen=True)
class VideoLabels:
    dataset: str
    video: str
    labels: FrameLabels


@dataclass
class TaskScore:
    """What METRICS.json holds for one task: per metric the estimate, its 95% CI and counts; what was left out."""

    task: str
    headline: str
    estimates: dict[str, Estimate]
    seed: int
    replicates: int
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    left_out: int = 0  # labelled frames the task's rules leave out (a CholecT50 frame with two different actions)

    @property
    def ap_from(self) -> str | None:
        names = [n for n in self.estimates if n.startswith("ap")]
        return (
            None if not names else "hard predictions" if any(n.endswith("_hard") for n in names) else "candidate scores"
        )

    def to_json(self) -> dict[str, Any]:
        first = next(iter(self.estimates.values()))
        return {
            "task": self.task,
            "headline": self.headline,
            "metrics": {name: _estimate_json(e) for name, e in self.estimates.items()},
            "n_videos": first.n_videos,
            "n_frames": first.n_frames,
            "parse_fail_rate": _num(first.parse_fail_rate),
            "ap_computed_on": self.ap_from,
            "ci": {
                "level": 0.95,
                "method": "video-level (cluster) bootstrap",
                "seed": self.seed,
                "replicates": self.replicates,
            },
            "labelled_frames_left_out": self.left_out,
            "skipped_videos": dict(sorted(self.skipped.items())),
            "problems": list(self.problems),
        }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _estimate_json(e: Estimate) -> dict[str, Any]:
    return {
        "estimate": _num(e.estimate),
        "ci_low": _num(e.ci_low),
        "ci_high": _num(e.ci_high),
        "sd": _num(e.sd),
        "n_videos": e.n_videos,
        "n_frames": e.n_frames,
        "parse_fail_rate": _num(e.parse_fail_rate),
    }


def _record(obj: Any, where: str) -> Record:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    video, frame, answer = obj.get("video"), obj.get("frame"), obj.get("answer")
    if not isinstance(video, (str, int)) or isinstance(video, bool) or str(video) == "":
        raise ValueError(f"`video` must be a name, got {video!r}")
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise ValueError(f"`frame` must be a non-negative integer, got {frame!r}")
    if not isinstance(answer, str):
        raise ValueError(f"`answer` must be text, got {answer!r}")
    logprobs, size = obj.get("logprobs"), obj.get("image_size")
    if logprobs is not None and not (
        isinstance(logprobs, dict) and all(isinstance(v, (int, float)) for v in logprobs.values())
    ):
        raise ValueError(f"`logprobs` must map candidates to numbers, got {str(logprobs)[:60]}")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise ValueError(f"`image_size` must be [width, height], got {size!r}")
    return Record(
        str(video),
        frame,
        Answer(answer, logprobs, tuple(size) if size else None),
        obj.get("dataset"),
        obj.get("task"),
        where,
    )


def read_predictions(path: Path) -> tuple[list[Record], list[str]]:
    """Records of a predictions file (one JSON object per line); malformed lines become problems, never guesses."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read predictions: {exc}") from exc
    records, problems = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            records.append(_record(json.loads(line), where))
        except (json.JSONDecodeError, ValueError) as exc:
            problems.append(f"{where}: {exc}: {line[:80]!r}")
    return records, problems


def load_label_sets(rt: TaskRuntime, specs: Sequence[LabelSpec]) -> tuple[list[VideoLabels], dict[str, str]]:
    """The task's labels of every video in the given datasets; a video with broken labels is skipped and listed."""
    out, skipped = [], {}
    for spec in specs:
        found, bad = scan(spec.path, spec.fmt)
        skipped.update({f"{spec.dataset}/{k}": v for k, v in bad.items()})
        for f in found:
            if rt.label_kind not in f.labels:
                continue
            try:
                labels = read_labels(rt.label_kind, f.labels[rt.label_kind], rt.task, f.video_id)
                check_frames(labels, f.media, f.labels[rt.label_kind], fps=f.fps, n_frames=f.n_frames)
                out.append(VideoLabels(spec.dataset, f.video_id, labels))
            except DataError as exc:
                skipped[f"{spec.dataset}/{f.video_id}"] = str(exc)
    return out, skipped


def _match(
    records: Iterable[Record], labels: Sequence[VideoLabels], task: str
) -> tuple[dict[tuple[str, str], dict[int, Answer]], list[str]]:
    """Predictions by (dataset, video) and frame; predictions without labels and duplicates become problems."""
    index = {(v.dataset, v.video): v for v in labels}
    by_video: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in index:
        by_video[key[1]].append(key)
    datasets = {v.dataset for v in labels}
    matched: dict[tuple[str, str], dict[int, Answer]] = defaultdict(dict)
    problems = []
    for rec in records:
        if rec.task not in (None, task) or (rec.dataset is not None and rec.dataset not in datasets):
            continue  # another task's or another dataset's answers in the same file
        keys = [(rec.dataset, rec.video)] if rec.dataset is not None else by_video.get(rec.video, [])
        if len(keys) > 1:
            problems.append(
                f"{rec.where}: video {rec.video!r} is in several datasets {[k[0] for k in keys]}; "
                "the prediction names none (add `dataset`)"
            )
        elif not keys or keys[0] not in index:
            problems.append(f"{rec.where}: prediction for video {rec.video!r}, which has no {task} labels")
        elif rec.frame not in index[keys[0]].labels.labels:
            problems.append(f"{rec.where}: prediction for frame {rec.frame} of video {rec.video!r}, which has no label")
        elif rec.frame in matched[keys[0]]:
            problems.append(f"{rec.where}: second prediction for frame {rec.frame} of video {rec.video!r} (ignored)")
        else:
            matched[keys[0]][rec.frame] = rec.answer
    return {k: v for k, v in matched.items() if v}, problems


def score_records(
    rt: TaskRuntime,
    labels: Sequence[VideoLabels],
    records: Iterable[Record],
    *,
    seed: int,
    replicates: int,
    skipped: dict[str, str] | None = None,
    problems: Sequence[str] = (),
) -> TaskScore:
    """Metrics of the predicted, labelled frames; videos in (dataset, video) order so reruns resample alike."""
    matched, more = _match(records, labels, rt.task.name)
    if not matched:
        raise DataError(
            f"no predictions match the {rt.task.name} labels of {len(labels)} videos"
            + (f"; first problem: {more[0]}" if more else "")
        )
    index = {(v.dataset, v.video): v.labels for v in labels}
    videos = []
    for key in sorted(matched):
        fl = index[key]
        videos.append([(fl.labels[f], _sized(a, fl, f)) for f, a in sorted(matched[key].items())])
    estimates = rt.summarise(videos, seed=seed, replicates=replicates)
    left_out = sum(index[key].dropped for key in matched)
    return TaskScore(
        rt.task.name,
        rt.task.arena_metric,
        estimates,
        seed,
        replicates,
        dict(skipped or {}),
        [*problems, *more],
        left_out,
    )


def _sized(answer: Answer, fl: FrameLabels, frame: int) -> Answer:
    """A prediction without its image size takes the label file's (for pixel boxes)."""
    if answer.size is None and frame in fl.sizes:
        return Answer(answer.text, answer.logprobs, fl.sizes[frame])
    return answer


def task_seed(protocol: StudyProtocol, task: str) -> int:
    """The bootstrap seed of a task: from the protocol's hash and the task's place in it, so reruns match."""
    return protocol.bootstrap_seed + 1000 * [t.name for t in protocol.tasks].index(task)


def write_metrics(path: Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
