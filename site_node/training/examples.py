"""Training examples from local labels in Surg-R1's hierarchical answer format, with answer-only labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from protocols.errors import DataError
from protocols.tasks import load_task
from site_node.answer_format import TOOL_WORDS, hierarchical_target, tool_word
from site_node.datasets.cholec80 import read_phase_file
from site_node.model.generate import chat_text
from site_node.store import DataStore, VideoEntry
from site_node.video import sample_frames

IGNORE = -100  # label value the loss skips
Progress = Callable[[int, int], None]


def read_tool_file(path: Path) -> dict[int, tuple[str, ...]]:
    """Cholec80 `videoXX-tool.txt`: frame -> the present tools' words; errors name file, line and value."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read tool labels: {exc}") from exc
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if not header or header[0].lower() != "frame":
        raise DataError(f"{path}:1: expected a header 'Frame<TAB>Grasper<TAB>...', got {lines[0][:60]!r}" if lines
                        else f"{path}: empty")
    words = []
    for name in header[1:]:
        try:
            words.append(tool_word(name))
        except DataError as exc:
            raise DataError(f"{path}:1: unknown tool column {name!r}; expected names from {sorted(TOOL_WORDS)}") from exc
    rows: dict[int, tuple[str, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        parts = [p.strip() for p in line.split("\t")]
        if not line.strip():
            continue
        if len(parts) != len(header) or not parts[0].isdigit() or any(p not in ("0", "1") for p in parts[1:]):
            raise DataError(f"{path}:{lineno}: expected a frame number and {len(words)} 0/1 values, got {line[:60]!r}")
        rows[int(parts[0])] = tuple(w for w, p in zip(words, parts[1:]) if p == "1")
    return rows


def tool_file_for(store: DataStore, video: VideoEntry) -> Path | None:
    """The video's tool file: its 'tool' manifest label, else Cholec80's tool_annotations/ beside phase_annotations/."""
    if "tool" in video.labels:
        return store.path(video.labels["tool"])
    phase = store.path(video.labels["phase"])
    if phase.parent.name != "phase_annotations" or not phase.name.endswith("-phase.txt"):
        return None
    candidate = phase.parent.parent / "tool_annotations" / phase.name.replace("-phase.txt", "-tool.txt")
    return candidate if candidate.is_file() else None


def _tools_at(rows: dict[int, tuple[str, ...]], keys: np.ndarray, frame: int) -> tuple[str, ...]:
    """The last annotated tool row at or before `frame` (Cholec80 annotates every 25th frame)."""
    i = int(np.searchsorted(keys, frame, side="right")) - 1
    return rows[int(keys[i])] if i >= 0 else ()


@dataclass(frozen=True)
class TrainingExample:
    video_id: str
    frame: int
    target: str


@dataclass
class TrainingSet:
    """Every labelled training frame of the site; `videos` is the privacy unit for DP sampling."""

    examples: list[TrainingExample]
    videos: dict[str, VideoEntry]
    steps: dict[str, int]  # video id -> frame stride used for sampling
    skipped: dict[str, str]

    def indices_by_video(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {v: [] for v in self.videos}
        for i, ex in enumerate(self.examples):
            out[ex.video_id].append(i)
        return {v: idx for v, idx in out.items() if idx}


def _video_examples(store: DataStore, video: VideoEntry, step: int) -> list[TrainingExample]:
    phases = read_phase_file(store.path(video.labels["phase"]), load_task("phase"))
    tool_path = tool_file_for(store, video)
    tools = read_tool_file(tool_path) if tool_path is not None else None
    keys = np.array(sorted(tools), dtype=np.int64) if tools else np.zeros(0, dtype=np.int64)
    frames = [f for f in sorted(phases) if f % step == 0 and 0 <= f < video.n_frames]
    return [TrainingExample(video.video_id, f,
                            hierarchical_target(phases[f], _tools_at(tools, keys, f) if tools is not None else None))
            for f in frames]


def build_training_set(store: DataStore, sample_every_s: float) -> TrainingSet:
    """One example per sampled labelled frame (same stride rule as evaluation); unusable videos are skipped."""
    examples: list[TrainingExample] = []
    videos, steps, skipped = {}, {}, {}
    for video in store.videos_with("phase"):
        step = max(1, round(video.fps * sample_every_s))
        try:
            if not store.path(video.video).is_file():  # frame folders need the image reader, not PyAV
                raise DataError(f"{video.video}: training reads video files only")
            found = _video_examples(store, video, step)
        except DataError as exc:
            skipped[video.video_id] = str(exc)
            continue
        if found:
            examples.extend(found)
            videos[video.video_id], steps[video.video_id] = video, step
    if not examples:
        raise DataError("the data store has no usable videos with phase labels to train on"
                        + (f" ({len(skipped)} skipped)" if skipped else "; run `site_node ingest` first"))
    return TrainingSet(examples, videos, steps, skipped)


def load_frames(store: DataStore, ts: TrainingSet, wanted: set[int],
                progress: Progress | None = None) -> dict[int, Image.Image]:
    """Decode just the frames of the wanted examples: one sequential pass per video, stopping after its last."""
    by_video: dict[str, dict[int, int]] = {}
    for i in wanted:
        ex = ts.examples[i]
        by_video.setdefault(ex.video_id, {})[ex.frame] = i
    out: dict[int, Image.Image] = {}
    for k, (vid, frames) in enumerate(sorted(by_video.items())):
        last = max(frames)
        for index, image in sample_frames(store.path(ts.videos[vid].video), ts.steps[vid]):
            if index in frames:
                out[frames[index]] = image
            if index >= last:
                break
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
        from monai.transforms import (Compose, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity,
                                      RandShiftIntensity)

        self.transform = Compose([
            RandAdjustContrast(prob=prob, gamma=(0.8, 1.25)),
            RandScaleIntensity(factors=0.15, prob=prob),
            RandShiftIntensity(offsets=0.05, prob=prob),
            RandGaussianNoise(prob=prob / 2, std=0.02),
        ])
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
        if full[:len(head)] != head:
            raise DataError(f"the answer {answer[:40]!r} merges with the prompt's last tokens; cannot mask it")
        lengths.append(len(full) - len(head))
    return lengths


def encode_batch(processor: Any, images: Sequence[Image.Image], answers: Sequence[str], task_prompt: str,
                 device: torch.device, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
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
        labels[row, ids.shape[1] - n:] = ids[row, ids.shape[1] - n:]
    return batch, labels
