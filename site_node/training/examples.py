"""Training examples from local labels in Surg-R1's hierarchical answer format, with answer-only labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from protocols.errors import DataError
from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target
from site_node.datasets.cholec80 import read_tool_file, tool_file_for  # noqa: F401 - re-exported
from site_node.datasets.frames import iter_frames
from site_node.datasets.registry import KIND_TASK, read_labels
from site_node.evaluation import select_frames
from site_node.model.generate import chat_text
from site_node.store import DataStore, FrameLabels, LabelKind, VideoEntry

IGNORE = -100  # label value the loss skips
Progress = Callable[[int, int], None]


class _AtOrBefore:
    """Sparse labels looked up by decoded-frame index: the last labelled frame at or before it (Cholec80
    tool rows come every 25th frame, CholecT50 triplets once a second)."""

    def __init__(self, fl: FrameLabels, video_fps: float) -> None:
        pairs = sorted((fl.video_frame(f, video_fps), v) for f, v in fl.labels.items())
        self._keys = np.array([k for k, _ in pairs], dtype=np.int64)
        self._values = [v for _, v in pairs]

    def __call__(self, frame: int) -> Any:
        i = int(np.searchsorted(self._keys, frame, side="right")) - 1
        return self._values[i] if i >= 0 else None


@dataclass(frozen=True)
class TrainingExample:
    video_id: str
    frame: int  # in the phase labels' numbering, as evaluation selects frames
    target: str
    # The frame's own labels (what GRPO's rewards check); None where the site has no such label.
    phase: str | None = None
    tools: tuple[str, ...] | None = None
    triplets: frozenset[str] | None = None
    cvs: tuple[bool, ...] | None = None


@dataclass
class TrainingSet:
    """Every labelled training frame of the site; `videos` is the privacy unit for DP sampling."""

    examples: list[TrainingExample]
    videos: dict[str, VideoEntry]
    phases: dict[str, FrameLabels]  # video id -> its phase labels (frame numbering, fps, frame images)
    skipped: dict[str, str]

    def indices_by_video(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {v: [] for v in self.videos}
        for i, ex in enumerate(self.examples):
            out[ex.video_id].append(i)
        return {v: idx for v, idx in out.items() if idx}

    def indices_by_unit(self) -> dict[str, list[int]]:
        """Example indices per privacy unit (case key): what DP samples and clips."""
        out: dict[str, list[int]] = {}
        for vid, idx in self.indices_by_video().items():
            out.setdefault(unit_key(self.videos[vid]), []).extend(idx)
        return out

    def units(self) -> list[str]:
        return sorted(self.indices_by_unit())


def unit_key(video: VideoEntry) -> str:
    """The privacy unit of a video: its case key (copies of one surgery share it), else its own id."""
    return video.case_key or video.video_id


def _labels(store: DataStore, video: VideoEntry, kind: LabelKind) -> FrameLabels | None:
    rel = video.labels.get(kind.value)
    return None if rel is None else read_labels(kind, store.path(rel), load_task(KIND_TASK[kind]), video.video_id)


def _levels(store: DataStore, video: VideoEntry) -> tuple[Callable[[int], Any], ...]:
    """Per decoded frame: the tools (L1), the triplets (L1 when there is no tool file, and L2) and the CVS (L3)."""

    def none(_frame: int) -> Any:
        return None

    tool_path = tool_file_for(store, video)
    tools = _AtOrBefore(FrameLabels(read_tool_file(tool_path)), video.fps) if tool_path is not None else none
    found = _labels(store, video, LabelKind.TRIPLET)
    triplets = _AtOrBefore(found, video.fps) if found is not None else none
    found = _labels(store, video, LabelKind.CVS)
    cvs = _AtOrBefore(found, video.fps) if found is not None else none
    return tools, triplets, cvs


def _target(phase: str, tools: tuple[str, ...] | None, triplets: frozenset[str] | None, cvs: Any) -> str:
    parts = [t.split(",") for t in sorted(triplets or ())]
    if tools is None and triplets is not None:  # CholecT50 names each triplet's instrument
        tools = tuple(dict.fromkeys(p[0] for p in parts))
    acts = [" ".join(p).replace("_", " ") for p in parts if p[1] != "null_verb"]  # an idle instrument does nothing
    return hierarchical_target(
        phase, tools, "; ".join(acts) or None, None if cvs is None else all(bool(c) for c in cvs)
    )


def _video_examples(
    store: DataStore, video: VideoEntry, sample_every_s: float
) -> tuple[FrameLabels, list[TrainingExample]]:
    phases = _labels(store, video, LabelKind.PHASE)
    assert phases is not None  # videos_with("phase")
    tools, triplets, cvs = _levels(store, video)
    frames = select_frames(list(phases.labels), phases.fps or video.fps, sample_every_s)
    examples = []
    for f in frames:
        vf = phases.video_frame(f, video.fps)
        if video.n_frames and not 0 <= vf < video.n_frames:
            continue
        phase, tool, trip, crit = phases.labels[f], tools(vf), triplets(vf), cvs(vf)
        examples.append(
            TrainingExample(
                video.video_id,
                f,
                _target(phase, tool, trip, crit),
                phase,
                tool,
                trip,
                None if crit is None else tuple(bool(c) for c in crit),
            )
        )
    return phases, examples


def build_training_set(store: DataStore, sample_every_s: float) -> TrainingSet:
    """One example per sampled labelled frame (the stride rule of evaluation); unusable videos are skipped."""
    examples: list[TrainingExample] = []
    videos, phases, skipped = {}, {}, {}
    seen: set[str] = set()
    for video in store.videos_with("phase"):
        if unit_key(video) in seen:  # the same surgery ingested twice trains (and counts) once
            skipped[video.video_id] = "another copy of a video already in the training set (same case key)"
            continue
        try:
            labels, found = _video_examples(store, video, sample_every_s)
        except DataError as exc:
            skipped[video.video_id] = str(exc)
            continue
        if found:
            examples.extend(found)
            videos[video.video_id], phases[video.video_id] = video, labels
            seen.add(unit_key(video))
    if not examples:
        raise DataError(
            "the data store has no usable videos with phase labels to train on"
            + (f" ({len(skipped)} skipped)" if skipped else "; run `site_node ingest` first")
        )
    return TrainingSet(examples, videos, phases, skipped)


def load_frames(
    store: DataStore, ts: TrainingSet, wanted: set[int], progress: Progress | None = None
) -> dict[int, Image.Image]:
    """Decode just the frames of the wanted examples: one sequential pass per video, stopping after its last."""
    by_video: dict[str, dict[int, int]] = {}
    for i in wanted:
        ex = ts.examples[i]
        by_video.setdefault(ex.video_id, {})[ex.frame] = i
    out: dict[int, Image.Image] = {}
    for k, (vid, frames) in enumerate(sorted(by_video.items())):
        video = ts.videos[vid]
        for frame, image in iter_frames(store.path(video.video), ts.phases[vid], sorted(frames), video.fps):
            out[frames[frame]] = image
        if progress:
            progress(k + 1, len(by_video))
    missing = sorted(wanted - set(out))
    if missing:
        ex = ts.examples[missing[0]]
        raise DataError(f"video {ex.video_id}: frame {ex.frame} could not be decoded ({len(missing)} frames missing)")
    return out


class FrameAugment:
    """MONAI intensity augmentation (contrast, gain, offset, sensor noise); no flips: instrument sides matter."""

    def __init__(self, seed: int, prob: float = 0.5) -> None:
        from monai.transforms import (
            Compose,
            RandAdjustContrast,
            RandGaussianNoise,
            RandScaleIntensity,
            RandShiftIntensity,
        )

        self.transform = Compose(
            [
                RandAdjustContrast(prob=prob, gamma=(0.8, 1.25)),
                RandScaleIntensity(factors=0.15, prob=prob),
                RandShiftIntensity(offsets=0.05, prob=prob),
                RandGaussianNoise(prob=prob / 2, std=0.02),
            ]
        )
        self.transform.set_random_state(seed=seed % (2**32))

    def __call__(self, image: Image.Image) -> Image.Image:
        arr = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0  # MONAI wants CHW
        out = np.asarray(self.transform(arr), dtype=np.float32)
        return Image.fromarray((np.clip(out, 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8))


def answer_lengths(processor: Any, prompt: str, answers: Sequence[str]) -> list[int]:
    """Tokens of each answer (EOS included) when it follows the templated prompt, checked to tokenise apart."""
    tok = processor.tokenizer
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    lengths = []
    for answer in answers:
        full = tok(prompt + answer + tok.eos_token, add_special_tokens=False)["input_ids"]
        if full[: len(head)] != head:
            raise DataError(f"the answer {answer[:40]!r} merges with the prompt's last tokens; cannot mask it")
        lengths.append(len(full) - len(head))
    return lengths


def encode_batch(
    processor: Any,
    images: Sequence[Image.Image],
    answers: Sequence[str],
    task_prompt: str,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Processor inputs for prompt + answer + EOS, LEFT-padded so every answer ends at the last column,
    and the labels (answer tokens only; everything else IGNORE)."""
    prompt = chat_text(processor, task_prompt)
    lengths = answer_lengths(processor, prompt, answers)
    eos = processor.tokenizer.eos_token
    side, processor.tokenizer.padding_side = processor.tokenizer.padding_side, "left"
    try:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        enc = processor(text=[prompt + a + eos for a in answers], images=rgb, padding=True, return_tensors="pt")
    finally:
        processor.tokenizer.padding_side = side
    batch = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
    ids = batch["input_ids"]
    labels = torch.full_like(ids, IGNORE)
    for row, n in enumerate(lengths):
        labels[row, ids.shape[1] - n :] = ids[row, ids.shape[1] - n :]
    return batch, labels
