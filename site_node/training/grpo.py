"""The site's GRPO step: G sampled completions per frame, rewards from local labels, clipped policy gradient + KL."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from PIL import Image

from protocols.grpo import GrpoPlan, RewardKind
from site_node.model.generate import chat_text, encode_batch
from site_node.model.loading import LoadedModel
from site_node.training.grpo_loss import TokenTerms, dapo_loss, group_advantages, group_losses, token_terms
from site_node.training.rewards import FrameTruth, Rewarder


@dataclass
class Rollout:
    """One step's sampled completions: rows are frame-major groups of G (frame 0's G completions first)."""

    inputs: dict[str, torch.Tensor]  # prompt + completion ids, attention mask, pixel values, grid
    completion_ids: torch.Tensor  # (rows, C)
    mask: torch.Tensor  # (rows, C): completion tokens up to and including the first EOS
    texts: list[str]


@dataclass(frozen=True)
class StepReward:
    """One scored step: its completions' summed total reward, how many, and the distinct videos its frames came from."""

    reward_sum: float
    completions: int
    videos: frozenset[str]


@dataclass
class GrpoStats:
    """What a round's steps add up to; only these aggregates may leave (through the release gate)."""

    frames: int = 0
    videos: set[str] = field(default_factory=set)  # distinct videos sampled (the small-cell count; stays here)
    groups: int = 0
    zero_spread_groups: int = 0
    reward_sum: dict[RewardKind, float] = field(default_factory=dict)
    reward_n: dict[RewardKind, int] = field(default_factory=dict)
    total_reward_sum: float = 0.0
    completions: int = 0
    kl_sum: float = 0.0
    clip_sum: float = 0.0
    token_steps: int = 0  # steps that computed a loss (KL and clip fraction are their means)
    steps: list[StepReward] = field(default_factory=list)  # per scored step (stays here; windows leave)

    def add_rewards(self, totals: Sequence[float], parts: Sequence[dict[RewardKind, float]]) -> None:
        self.total_reward_sum += float(sum(totals))
        self.completions += len(totals)
        for p in parts:
            for kind, value in p.items():
                self.reward_sum[kind] = self.reward_sum.get(kind, 0.0) + value
                self.reward_n[kind] = self.reward_n.get(kind, 0) + 1

    def means(self) -> dict[str, float]:
        """Mean reward (total and per component), share of zero-spread groups, mean KL, clip fraction."""
        out = {f"reward-{k.value}": self.reward_sum[k] / self.reward_n[k] for k in sorted(self.reward_n)}
        if self.completions:
            out["reward-mean"] = self.total_reward_sum / self.completions
        if self.groups:
            out["zero-spread-share"] = self.zero_spread_groups / self.groups
        if self.token_steps:
            out["kl-mean"], out["clip-fraction"] = self.kl_sum / self.token_steps, self.clip_sum / self.token_steps
        return out | self.window_means()

    def window_means(self) -> dict[str, float]:
        """Mean total reward over the first and over the second half of the scored steps (one step each when there
        is one), and how many distinct videos each half sampled (the release gate's cell count; it stays here). The
        first half starts from the incoming global adapter, the second ends at the adapter this site sends back;
        a round that passes over its frames twice scores the same frames in both."""
        if not self.steps:
            return {}
        width = max(1, len(self.steps) // 2)
        out: dict[str, float] = {}
        for name, window in (("reward-first", self.steps[:width]), ("reward-last", self.steps[-width:])):
            out[name] = sum(s.reward_sum for s in window) / max(1, sum(s.completions for s in window))
            out[f"{name}-videos"] = float(len(frozenset().union(*(s.videos for s in window))))
        return out


VISION_TOKEN_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def vision_token_ids(model: Any) -> list[int]:
    """The model's image and video placeholder tokens. Sampling must never draw one: the loss re-reads prompt and
    completion with the frame, and the model refuses more image tokens than the frame has features."""
    return sorted({int(v) for key in VISION_TOKEN_KEYS if (v := getattr(model.config, key, None)) is not None})


def sampling_config(model: Any, plan: GrpoPlan) -> Any:
    """The model's generation config with sampling on, at the plan's temperature and top-p (no top-k cut), the
    vision placeholder tokens suppressed."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample, config.num_beams = True, 1
    config.temperature, config.top_p, config.top_k = plan.temperature, plan.top_p, 0
    config.max_new_tokens = plan.max_completion_tokens
    config.suppress_tokens = vision_token_ids(model)
    return config


def _eos_ids(model: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def completion_mask(ids: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 for every completion token up to and including the first EOS (TRL's mask), 0 after it."""
    is_eos = torch.isin(ids, torch.tensor(list(eos_ids), device=ids.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], ids.shape[1]))
    return (torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) <= first.unsqueeze(1)).to(torch.float32)


def sample_rollout(lm: LoadedModel, model: Any, images: Sequence[Image.Image], prompt: str,
                   plan: GrpoPlan) -> Rollout:  # fmt: skip
    """G completions per image from the current adapter, sampled in one batch (each image repeated G times)."""
    rows = [im for im in images for _ in range(plan.group_size)]
    enc = encode_batch(lm, rows, chat_text(lm.processor, prompt))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=sampling_config(model, plan))
    finally:
        model.train(was_training)
    prompt_len = enc["input_ids"].shape[1]
    completion = out[:, prompt_len:].clone()
    mask = completion_mask(completion, _eos_ids(model))
    inputs = dict(enc)
    inputs["input_ids"] = out.clone()
    inputs["attention_mask"] = torch.cat([enc["attention_mask"], mask.to(enc["attention_mask"].dtype)], dim=1)
    for key, value in enc.items():  # per-token side inputs (mm_token_type_ids): completion tokens are text, 0
        if key not in ("input_ids", "attention_mask") and value.shape == enc["input_ids"].shape:
            inputs[key] = torch.cat([value, torch.zeros_like(completion, dtype=value.dtype)], dim=1)
    lengths = mask.sum(1).long().tolist()
    texts = lm.processor.batch_decode([row[:n] for row, n in zip(completion, lengths, strict=True)],
                                      skip_special_tokens=True)  # fmt: skip
    return Rollout(inputs, completion, mask.to(lm.device), [t.strip() for t in texts])


def completion_logps(model: torch.nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """Log-probability of each sampled completion token under `model` (logits / temperature, as TRL)."""
    n = rollout.completion_ids.shape[1]
    logits = model(**rollout.inputs, logits_to_keep=n + 1, use_cache=False).logits[:, :-1].float()
    logps = torch.log_softmax(logits / temperature, dim=-1)
    return logps.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)


@contextmanager
def reference_weights(model: PeftModel, reference: dict[str, torch.Tensor]) -> Iterator[None]:
    """The adapter's trainable weights temporarily set to the reference (the round's incoming global adapter)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = {n: p.detach().clone() for n, p in params.items()}
    was_training = model.training
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(reference[n])
    model.eval()  # the reference without dropout: it is a fixed distribution
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


def trainable_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class StepData:
    """A scored rollout: its completions' advantages and the old/reference log-probabilities."""

    rollout: Rollout
    advantages: torch.Tensor  # (rows,)
    zero_spread: torch.Tensor  # (frames,)


def score_rollout(rollout: Rollout, truths: Sequence[FrameTruth], rewarder: Rewarder, group_size: int,
                  stats: GrpoStats, videos: Sequence[str] = ()) -> StepData:  # fmt: skip
    """Rewards of every completion against its frame's labels (`videos`: the frames' videos, for the step's
    record); advantages normalised within each group."""
    totals: list[list[float]] = []
    for f, truth in enumerate(truths):
        texts = rollout.texts[f * group_size : (f + 1) * group_size]
        group, parts = rewarder.score(texts, truth)
        stats.add_rewards(group, parts)
        totals.append(group)
    adv, zero = group_advantages(torch.tensor(totals, dtype=torch.float32))
    stats.steps.append(StepReward(float(sum(map(sum, totals))), sum(map(len, totals)), frozenset(videos)))
    stats.frames += len(truths)
    stats.groups += len(truths)
    stats.zero_spread_groups += int(zero.sum())
    return StepData(rollout, adv.reshape(-1).to(rollout.mask.device), zero)


def step_terms(forward_model: torch.nn.Module, model: PeftModel, data: StepData, plan: GrpoPlan,
               reference: dict[str, torch.Tensor]) -> TokenTerms:  # fmt: skip
    """Per-token loss terms of one step (old = the sampling policy, detached: one update per rollout, as TRL's
    num_iterations=1); the reference log-probabilities come from the incoming adapter, without gradient."""
    ref = None
    if plan.beta != 0.0:  # first: swapping weights in place after the policy forward would corrupt its graph
        with torch.no_grad(), reference_weights(model, reference):
            ref = completion_logps(model, data.rollout, plan.temperature)
    logps = completion_logps(forward_model, data.rollout, plan.temperature)
    return token_terms(logps, logps.detach(), ref, data.advantages, epsilon=plan.clip_epsilon, beta=plan.beta)


def plain_loss(terms: TokenTerms, data: StepData, stats: GrpoStats) -> torch.Tensor:
    """The batch's DAPO loss; KL and clip fraction are recorded as token means."""
    mask = data.rollout.mask
    record(terms, mask, stats)
    return dapo_loss(terms.loss, mask)


def private_losses(terms: TokenTerms, data: StepData, group_size: int, stats: GrpoStats) -> torch.Tensor:
    """Per-video losses for DP: each group's token-normalised loss."""
    record(terms, data.rollout.mask, stats)
    return group_losses(terms.loss, data.rollout.mask, group_size)


def record(terms: TokenTerms, mask: torch.Tensor, stats: GrpoStats) -> None:
    tokens = mask.sum().clamp(min=1.0)
    stats.kl_sum += float((terms.kl.detach() * mask).sum() / tokens)
    stats.clip_sum += float((terms.clipped * mask).sum() / tokens)
    stats.token_steps += 1
