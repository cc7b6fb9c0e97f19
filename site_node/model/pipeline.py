"""Batched evaluation across videos: one vision pass per frame, shared by generation and candidate scoring."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from protocols.errors import ConfigError
from site_node.model.generate import chat_text, greedy_config
from site_node.model.loading import LoadedModel
from site_node.model.prefetch import FrameInput, FramePrefetcher, VideoJob, frames_inline
from site_node.model.scoring import score_prefix_ids
from site_node.task_runtime import Answer


@dataclass
class ModelTime:
    """Seconds spent inside the model calls (generation, vision pass, scoring passes), for the benchmark."""

    generate: float = 0.0
    vision: float = 0.0
    scoring: float = 0.0
    frames: int = 0

    @property
    def total(self) -> float:
        return self.generate + self.vision + self.scoring


@dataclass(frozen=True)
class EvalRequest:
    """What to ask of every frame: the prompt, the candidates to score (may be empty) and the decoding length."""

    prompt: str
    candidates: Mapping[str, str]
    max_new_tokens: int
    batch_size: int = 8
    min_new_tokens: int = 0  # = max_new_tokens in benchmarks, so that every path decodes the same work
    timing: ModelTime = field(default_factory=ModelTime)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"expected batch_size >= 1 and 0 <= min_new_tokens <= max_new_tokens >= 1, got batch_size="
                f"{self.batch_size}, min_new_tokens={self.min_new_tokens}, max_new_tokens={self.max_new_tokens}"
            )


def collate(items: Sequence[FrameInput], pad_id: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Left-padded batch tensors, exactly as the processor pads a batch of prompts."""
    width = max(len(it.input_ids) for it in items)
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    for row, it in enumerate(items):
        n = len(it.input_ids)
        ids[row, width - n :], mask[row, width - n :], types[row, width - n :] = it.input_ids, 1, it.mm_token_type_ids
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
        "mm_token_type_ids": torch.from_numpy(types).to(device),
        "pixel_values": torch.from_numpy(np.concatenate([it.pixel_values for it in items])).to(device, dtype),
        "image_grid_thw": torch.from_numpy(np.stack([it.grid for it in items])).to(device),
    }


def input_size(lm: LoadedModel, item: FrameInput) -> tuple[int, int]:
    """(width, height) the model saw, from the frame's patch grid (what scoring.model_input_size computes again)."""
    patch = int(lm.processor.image_processor.patch_size)
    return int(item.grid[2]) * patch, int(item.grid[1]) * patch


def _generate(lm: LoadedModel, batch: Sequence[FrameInput], req: EvalRequest) -> tuple[list[str], tuple[Any, ...]]:
    """Answers of one batch and each frame's image embeddings (the batch's only vision-encoder pass)."""
    enc = collate(batch, lm.processor.tokenizer.pad_token_id or 0, lm.device, lm.dtype)
    config = greedy_config(lm.model, req.max_new_tokens)
    config.min_new_tokens = req.min_new_tokens or None
    t0 = time.perf_counter()
    with torch.inference_mode():
        vision = lm.model.get_image_features(enc.pop("pixel_values"), enc["image_grid_thw"], return_dict=True)
        t1 = time.perf_counter()
        out = lm.model.generate(**enc, mm_encoder_outputs={"image": vision}, generation_config=config)
    req.timing.vision += t1 - t0
    req.timing.generate += time.perf_counter() - t1
    texts = lm.processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [t.strip() for t in texts], tuple(vision.pooler_output)


def _score(lm: LoadedModel, item: FrameInput, embeds: torch.Tensor, text: str, req: EvalRequest) -> dict[str, float]:
    # The model reads pooler_output as the tuple of per-image embeddings that get_image_features returns.
    features = BaseModelOutputWithPooling(pooler_output=(embeds,))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    scores = score_prefix_ids(lm, chat_text(lm.processor, req.prompt), text, item.grid, features, req.candidates)
    req.timing.scoring += time.perf_counter() - t0
    return scores


def _batches(frames: Iterable[FrameInput], size: int) -> Iterator[list[FrameInput]]:
    batch: list[FrameInput] = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def answer_batch(lm: LoadedModel, batch: Sequence[FrameInput], req: EvalRequest) -> list[tuple[int, int, Answer]]:
    """(video index, frame, answer) for one batch: generation, then candidate scoring on the same image embeddings."""
    texts, embeds = _generate(lm, batch, req)
    out = []
    for item, text, emb in zip(batch, texts, embeds, strict=True):
        scores = _score(lm, item, emb, text, req) if req.candidates else None
        req.timing.frames += 1
        out.append((item.video, item.frame, Answer(text, scores, input_size(lm, item))))
    return out


class BatchRunner(Protocol):
    """Something that answers batches in order (a pool of model copies on several devices)."""

    def run(self, batches: Iterable[list[FrameInput]], req: EvalRequest) -> Iterator[list[tuple[int, int, Answer]]]: ...


def answer_frames(
    lm: LoadedModel | None, frames: Iterable[FrameInput], req: EvalRequest, runner: BatchRunner | None = None
) -> Iterator[tuple[int, int, Answer]]:
    """(video index, frame, answer) for every frame, batched across videos in the order the frames arrive."""
    batches = _batches(frames, req.batch_size)
    if runner is not None:
        for answers in runner.run(batches, req):
            yield from answers
        return
    assert lm is not None
    for batch in batches:
        yield from answer_batch(lm, batch, req)


def answer_videos(
    lm: LoadedModel,
    jobs: Sequence[VideoJob],
    req: EvalRequest,
    prefetcher: FramePrefetcher | None = None,
    runner: BatchRunner | None = None,
) -> Iterator[tuple[int, int, Answer]]:
    """Every job's frames answered; pipelined through `prefetcher` when given, else prepared in this process;
    batches answered by `runner` (model copies on several devices) when given, else by `lm`."""
    text = chat_text(lm.processor, req.prompt)
    frames = prefetcher.frames(text, jobs) if prefetcher else frames_inline(lm.processor, text, jobs)
    yield from answer_frames(lm, frames, req, runner)
