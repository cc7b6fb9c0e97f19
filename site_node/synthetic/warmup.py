"""Short supervised warm-up that teaches the tiny model every task family's prompt and Surg-R1's answer format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from protocols.errors import ConfigError
from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target, tool_word
from site_node.model.generate import chat_text
from site_node.synthetic import render
from site_node.synthetic.warmup_targets import WARMUP_TASKS, render_scenes, task_mix, task_target

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class WarmupConfig:
    """Training budget and optimiser settings; the defaults take a few minutes on 2 CPU cores (README: speed)."""

    steps: int = 600  # 400 left the first and last phases unlearned even on source frames (README: calibration)
    batch_size: int = 16
    lr: float = 3e-3
    pool_size: int = 896  # distinct source-domain frames, reused across steps
    threads: int = 1  # one thread: on a busy 2-core machine, two OpenMP threads stall each other
    warmup_steps: int = 20

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "pool_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"WarmupConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"WarmupConfig.lr must be in (0, 1), got {self.lr}")


def target_answer(phase: str, tools: Sequence[str]) -> str:
    """What a site's training example says for a Cholec80 frame with these tools (synthetic tool names):
    the same text as site_node.training, so fine-tuning does not have to re-teach the layout."""
    return hierarchical_target(phase, [tool_word(t) for t in tools])


@dataclass
class _Examples:
    """Tokenised source-domain examples; labels cover the assistant's answer only."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    extra: dict[str, torch.Tensor]  # per-example tensors such as mm_token_type_ids
    pixel_values: torch.Tensor  # (examples, patches, patch_dim): every frame has the same size
    image_grid_thw: torch.Tensor

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        width = int(self.attention_mask[idx].sum(1).max())  # right padding: trim unused columns
        out = {k: v[idx, :width] for k, v in self.extra.items()}
        out.update(
            input_ids=self.input_ids[idx, :width],
            attention_mask=self.attention_mask[idx, :width],
            labels=self.labels[idx, :width],
            pixel_values=self.pixel_values[idx].reshape(-1, self.pixel_values.shape[-1]),
            image_grid_thw=self.image_grid_thw[idx],
        )
        return out


def build_examples(processor: Any, cfg: WarmupConfig, rng: np.random.Generator, chunk: int = 64) -> _Examples:
    """Render source-domain frames, ask each one task family's prompt, and encode them with the same chat
    template and processor as inference; the targets carry all three reasoning levels and the task's answer."""
    names = render.phase_names()
    phases = rng.permutation(np.arange(cfg.pool_size) % len(names))
    # varied exposure and noise (never a colour cast) keep the answer format stable on other sites' frames
    frames, scenes = render_scenes([int(k) for k in phases], rng)
    tasks = task_mix(scenes, rng)
    images = [Image.fromarray(f) for f in frames]
    prompts = {t: chat_text(processor, load_task(t).render_prompt()) for t in WARMUP_TASKS}
    # the answer ends with the EOS token (<|im_end|>): the model must learn to stop
    texts = [
        prompts[t] + task_target(t, scene) + processor.tokenizer.eos_token
        for t, scene in zip(tasks, scenes, strict=True)
    ]
    enc = _encode_right_padded(processor, texts, images, chunk)
    prompt_len = {t: len(processor(text=[p], images=images[:1])["input_ids"][0]) for t, p in prompts.items()}
    labels = enc["input_ids"].clone()
    for i, t in enumerate(tasks):
        labels[i, : prompt_len[t]] = IGNORE  # loss on the assistant's answer only
    labels[enc["attention_mask"] == 0] = IGNORE
    skip = {"input_ids", "attention_mask", "pixel_values", "image_grid_thw"}
    return _Examples(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        labels=labels,
        extra={k: v for k, v in enc.items() if k not in skip},
        pixel_values=enc["pixel_values"].reshape(len(images), -1, enc["pixel_values"].shape[-1]),
        image_grid_thw=enc["image_grid_thw"],
    )


def _encode_right_padded(
    processor: Any, texts: list[str], images: list[Image.Image], chunk: int
) -> dict[str, torch.Tensor]:
    """Processor outputs for all examples, in chunks, with the text padded on the right to one width."""
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        parts = [
            dict(processor(text=texts[i : i + chunk], images=images[i : i + chunk], padding=True, return_tensors="pt"))
            for i in range(0, len(texts), chunk)
        ]
    finally:
        tokenizer.padding_side = side
    width = max(p["input_ids"].shape[1] for p in parts)
    pad_value = {"input_ids": tokenizer.pad_token_id}
    out = {}
    for key in parts[0]:
        if key in ("pixel_values", "image_grid_thw"):  # per patch / per image: nothing to pad
            out[key] = torch.cat([p[key] for p in parts])
        else:
            out[key] = torch.cat(
                [
                    torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=pad_value.get(key, 0))
                    for p in parts
                ]
            )
    return out


def _lr_factor(step: int, cfg: WarmupConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak rate."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def warm_up(
    model: Any, processor: Any, seed: int = 0, cfg: WarmupConfig | None = None, progress: bool = True
) -> list[float]:
    """Fine-tune all weights on source-domain frames; returns the loss per step."""
    cfg = cfg or WarmupConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # restored below: the thread count is the caller's business
    try:
        # A seed stream of its own, so no demo site (synth_videos.synthesize_site streams) sees these frames.
        rng = np.random.default_rng([seed, 0x5EED])
        examples = build_examples(processor, cfg, rng)
        gen = torch.Generator().manual_seed(seed)
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, cfg))
        model.train()
        losses = []
        for _ in tqdm(range(cfg.steps), desc="warm-up", disable=not progress, unit="step"):
            idx = torch.randint(0, len(examples.input_ids), (cfg.batch_size,), generator=gen)
            loss = model(**examples.batch(idx)).loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            losses.append(loss.item())
        model.eval()
        return losses
    finally:
        torch.set_num_threads(threads)
