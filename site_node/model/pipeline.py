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

_Answer = tuple[int, int, Answer]  # (video index, frame, answer)


@dataclass
class ModelTime:
    """Seconds spent inside the model calls (generation, vision pass, scoring passes), for the benchmark."""

    generate: float = 0.0
    vision: float = 0.0
    scoring: float = 0.0
    frames: int = 0
    prompt_tokens: int = 0  # the prompts' own tokens (text and image placeholders) of every batch formed
    batch_tokens: int = 0  # rows x widest prompt of every batch: what the prefill computes, padding included

    @property
    def total(self) -> float:
        return self.generate + self.vision + self.scoring

    @property
    def padding_share(self) -> float:
        """The share of the prefill's prompt positions that are left padding."""
        return 1.0 - self.prompt_tokens / self.batch_tokens if self.batch_tokens else 0.0


@dataclass(frozen=True)
class EvalRequest:
    """What to ask of every frame: the prompt, the candidates to score (may be empty) and the decoding length."""

    prompt: str
    candidates: Mapping[str, str]
    max_new_tokens: int
    batch_size: int = 8
    min_new_tokens: int = 0  # = max_new_tokens in benchmarks, so that every path decodes the same work
    timing: ModelTime = field(default_factory=ModelTime)
    # Frames held to form batches of similar prompt length (frames of other sizes have other image-token counts);
    # None: 4 batches' worth; up to batch_size (0 too): batches in arrival order. Answers leave in arrival order.
    bucket_window: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"expected batch_size >= 1 and 0 <= min_new_tokens <= max_new_tokens >= 1, got batch_size="
                f"{self.batch_size}, min_new_tokens={self.min_new_tokens}, max_new_tokens={self.max_new_tokens}"
            )
        if self.bucket_window is not None and self.bucket_window < 0:
            raise ConfigError(f"expected bucket_window >= 0 (0: no bucketing), got {self.bucket_window}")

    @property
    def window(self) -> int:
        return 4 * self.batch_size if self.bucket_window is None else max(self.bucket_window, self.batch_size)


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


def _windows(frames: Iterable[FrameInput], size: int) -> Iterator[list[FrameInput]]:
    chunk: list[FrameInput] = []
    for item in frames:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _bucketed(frames: Iterable[FrameInput], req: EvalRequest, orders: list[list[int]]) -> Iterator[list[FrameInput]]:
    """Batches of similar prompt length: each window of frames sorted by length (stably), then cut into batches.

    Each window's order is appended to `orders` before its batches are yielded, so answers can be put back in
    arrival order. Frames of one length keep their arrival order: with one frame size, batches are unchanged.
    """
    for chunk in _windows(frames, req.window):
        order = list(range(len(chunk)))
        if req.window > req.batch_size:
            order.sort(key=lambda i: len(chunk[i].input_ids))
        orders.append(order)
        for start in range(0, len(order), req.batch_size):
            batch = [chunk[i] for i in order[start : start + req.batch_size]]
            req.timing.prompt_tokens += sum(len(it.input_ids) for it in batch)
            req.timing.batch_tokens += len(batch) * max(len(it.input_ids) for it in batch)
            yield batch


def _in_arrival_order(answers: Iterable[list[_Answer]], orders: list[list[int]]) -> Iterator[_Answer]:
    """Answers of whole windows, each put back in the order its frames arrived."""
    held: list[_Answer] = []
    for batch in answers:
        held.extend(batch)
        while orders and len(held) >= len(orders[0]):
            order = orders.pop(0)
            by_arrival = dict(zip(order, held[: len(order)], strict=True))
            held = held[len(order) :]
            yield from (by_arrival[i] for i in range(len(order)))
    yield from held  # nothing is left unless a runner dropped answers; then they are not reordered


def answer_batch(lm: LoadedModel, batch: Sequence[FrameInput], req: EvalRequest) -> list[_Answer]:
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
    """(video index, frame, answer) for every frame in the order the frames arrive, batched across videos and
    by prompt length within each window of `req.window` frames."""
    orders: list[list[int]] = []
    batches = _bucketed(frames, req, orders)
    if runner is not None:
        yield from _in_arrival_order(runner.run(batches, req), orders)
        return
    assert lm is not None
    yield from _in_arrival_order((answer_batch(lm, batch, req) for batch in batches), orders)


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
