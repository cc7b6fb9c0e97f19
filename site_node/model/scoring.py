"""Candidate scores for AP: the log-probability of each candidate answer after the model's own reasoning."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from protocols.errors import ConfigError
from site_node.model.generate import chat_text
from site_node.model.loading import LoadedModel

_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)


def reasoning_prefix(answer: str) -> str:
    """The generated text up to and including its last '<answer>' tag (the tag is appended when it is missing)."""
    opens = list(_ANSWER_OPEN.finditer(answer))
    return answer[: opens[-1].start()] + "<answer>" if opens else answer.rstrip() + "<answer>"


def model_input_size(lm: LoadedModel, image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as the model sees it after the processor's resize (Qwen2.5-VL pixel boxes)."""
    proc = lm.processor.image_processor
    try:
        grid = proc(images=[image.convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
        patch = int(proc.patch_size)
        return int(grid[2]) * patch, int(grid[1]) * patch
    except (KeyError, AttributeError, TypeError, ValueError):
        return image.size


def _prefix(
    lm: LoadedModel, image: Image.Image, prefix: str, drop: int = 0
) -> tuple[Any, torch.Tensor, int, torch.Tensor]:
    """One forward pass over image + prompt + reasoning, less its last `drop` tokens: (cache, log-probs of the next
    token, length, rope delta)."""
    enc = lm.processor(text=[prefix], images=[image.convert("RGB")], return_tensors="pt")
    enc = {k: v.to(lm.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
    enc = _drop_tail(enc, drop)
    enc["pixel_values"] = enc["pixel_values"].to(lm.dtype)
    return _prefix_pass(lm, enc)


def _prefix_pass(lm: LoadedModel, enc: dict[str, Any]) -> tuple[Any, torch.Tensor, int, torch.Tensor]:
    out = lm.model(**enc, use_cache=True)
    # Qwen2.5-VL's 3-D rotary positions: text after the image continues at (index + delta) on all three axes;
    # the prefill just computed delta and left it on the inner model (under a PEFT wrapper when an adapter is on).
    base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    delta = base.model.rope_deltas
    return out.cache, torch.log_softmax(out.logits[0, -1].float(), -1), int(enc["input_ids"].shape[1]), delta


def _drop_tail(enc: dict[str, Any], drop: int) -> dict[str, Any]:
    """The text inputs without their last `drop` tokens (the image's tokens come long before them)."""
    if drop <= 0:
        return enc
    text_keys = ("input_ids", "attention_mask", "mm_token_type_ids")
    return {k: (v[:, :-drop] if k in text_keys else v) for k, v in enc.items()}


def prefix_inputs(lm: LoadedModel, prefix: str, grid: Any) -> dict[str, torch.Tensor]:
    """The processor's text inputs for `prefix` with one image of patch grid `grid`, without touching the image."""
    proc = lm.processor
    n_image = int(np.prod(np.asarray(grid))) // int(proc.image_processor.merge_size) ** 2
    ids = proc.tokenizer(prefix.replace(proc.image_token, proc.image_token * n_image, 1))["input_ids"]
    return {
        "input_ids": torch.tensor([ids], device=lm.device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=lm.device),
        "mm_token_type_ids": torch.tensor(proc.create_mm_token_type_ids([ids]), device=lm.device),
        "image_grid_thw": torch.as_tensor(np.asarray(grid)).view(1, 3).to(lm.device),
    }


def _continue(
    lm: LoadedModel, cache: Any, n_prefix: int, delta: torch.Tensor, conts: Sequence[list[int]]
) -> torch.Tensor:
    """Log-probs (rows x tokens x vocab) of right-padded continuations fed after a copy of the prefix cache."""
    n, width = len(conts), max(len(c) for c in conts)
    pad = lm.processor.tokenizer.pad_token_id or 0
    ids = torch.tensor([c + [pad] * (width - len(c)) for c in conts], device=lm.device)
    mask = torch.tensor([[1] * (n_prefix + len(c)) + [0] * (width - len(c)) for c in conts], device=lm.device)
    positions = torch.arange(n_prefix, n_prefix + width, device=lm.device).view(1, 1, -1) + delta.view(1, -1, 1)[:, :1]
    rows = copy.deepcopy(cache)
    rows.batch_repeat_interleave(n)
    out = lm.model(
        input_ids=ids, attention_mask=mask, cache=rows, use_cache=True, position_ids=positions.expand(3, n, width)
    )
    return torch.log_softmax(out.logits.float(), -1)


def candidate_logprobs(
    lm: LoadedModel,
    images: Sequence[Image.Image],
    prompt: str,
    answers: Sequence[str],
    candidates: Mapping[str, str],
    *,
    chunk: int = 32,
) -> list[dict[str, float]]:
    """Per frame, {candidate key: sum of the log-probabilities of its tokens} after the frame's reasoning prefix.

    Each candidate is tokenised together with the prefix, as the model writes it: a byte-level BPE merges the
    tag's '>' with the answer's first letters ('>grasper'), so a candidate tokenised on its own would be scored
    as a token sequence the model never writes. The prefix tokens all candidates share are run once; each
    candidate's score is the sum of the log-probabilities of its tokens from there. Cost: one forward pass over
    the shared prefix per frame, then one short pass per `chunk` candidates on a copy of its key/value cache.
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    if len(images) != len(answers):
        raise ConfigError(f"expected one answer per image, got {len(answers)} answers for {len(images)} images")
    base = chat_text(lm.processor, prompt)
    out = []
    for image, answer in zip(images, answers, strict=False):
        text = base + reasoning_prefix(answer)
        keys, drop, cont_ids = candidate_ids(lm.processor.tokenizer, text, candidates)
        with torch.inference_mode():
            prefix = _prefix(lm, image, text, drop)
        out.append(_candidates(lm, prefix, keys, cont_ids, chunk))
    return out


def candidate_ids(tok: Any, prefix: str, candidates: Mapping[str, str]) -> tuple[list[str], int, list[list[int]]]:
    """(keys, how many of the prefix's last tokens the candidates re-tokenise, each candidate's tokens from there),
    all from tokenising prefix + candidate as one text."""
    keys = list(candidates)
    if any(not candidates[k] for k in keys):
        raise ConfigError("every candidate answer must be non-empty text")
    own = tok(prefix, add_special_tokens=False)["input_ids"]
    joint = tok([prefix + candidates[k] for k in keys], add_special_tokens=False)["input_ids"]
    shared = min(_common_length(own, ids) for ids in joint)
    return keys, len(own) - shared, [ids[shared:] for ids in joint]


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _candidates(
    lm: LoadedModel,
    prefix: tuple[Any, torch.Tensor, int, torch.Tensor],
    keys: list[str],
    cont_ids: list[list[int]],
    chunk: int,
) -> dict[str, float]:
    cache, first, n_prefix, delta = prefix
    scores: dict[str, float] = {}
    with torch.inference_mode():
        for start in range(0, len(keys), chunk):
            part = cont_ids[start : start + chunk]
            logp = _continue(lm, cache, n_prefix, delta, part)
            for row, (key, ids) in enumerate(zip(keys[start : start + chunk], part, strict=False)):
                rest = logp[row, torch.arange(len(ids) - 1), torch.tensor(ids[1:], dtype=torch.long)]
                scores[key] = float(first[ids[0]] + rest.sum())
    return scores


def score_prefix_ids(
    lm: LoadedModel,
    base: str,
    answer: str,
    grid: Any,
    features: Any,
    candidates: Mapping[str, str],
    *,
    chunk: int = 32,
) -> dict[str, float]:
    """candidate_logprobs for one frame whose image embeddings the generation already computed (no vision pass)."""
    text = base + reasoning_prefix(answer)
    keys, drop, cont_ids = candidate_ids(lm.processor.tokenizer, text, candidates)
    enc: dict[str, Any] = _drop_tail(prefix_inputs(lm, text, grid), drop)
    enc["mm_encoder_outputs"] = {"image": features}
    with torch.inference_mode():
        prefix = _prefix_pass(lm, enc)
    return _candidates(lm, prefix, keys, cont_ids, chunk)
