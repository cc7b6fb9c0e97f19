"""Batched greedy answers of a loaded vision-language model to one prompt over many frames."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import GenerationConfig

from protocols.errors import ConfigError
from site_node.model.loading import LoadedModel


def chat_messages(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the image first, then the question (as Qwen2.5-VL was trained)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def chat_text(processor: Any, prompt: str) -> str:
    """The templated prompt up to the assistant's turn; training and inference share it."""
    return str(processor.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True))


# Neutral values for sampling settings a checkpoint may ship (Qwen2.5-VL's do): under greedy decoding they
# only produce warnings, and None would not do, because generate() fills None from the model's config.
_NEUTRAL_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "typical_p": 1.0}


def greedy_config(model: Any, max_new_tokens: int) -> GenerationConfig:
    """The model's own generation config (EOS and pad ids, repetition penalty), forced to greedy decoding."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    for key, value in _NEUTRAL_SAMPLING.items():
        setattr(config, key, value)
    return config


def encode_batch(lm: LoadedModel, images: Sequence[Image.Image], text: str) -> dict[str, torch.Tensor]:
    """Processor outputs for one prompt per image, on the model's device and dtype."""
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    lm.processor.tokenizer.padding_side = "left"
    enc = lm.processor(text=[text] * len(rgb), images=rgb, padding=True, return_tensors="pt")
    out = {k: v.to(lm.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(lm.dtype)
    return out


def generate_answers(
    lm: LoadedModel, images: Sequence[Image.Image], prompt: str, *, max_new_tokens: int = 64, batch_size: int = 8
) -> list[str]:
    """The model's decoded answer (new tokens only, special tokens skipped) for each image, in order."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    text = chat_text(lm.processor, prompt)
    config = greedy_config(lm.model, max_new_tokens)
    answers: list[str] = []
    for start in range(0, len(images), batch_size):
        enc = encode_batch(lm, images[start : start + batch_size], text)
        with torch.inference_mode():
            out = lm.model.generate(**enc, generation_config=config)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        answers.extend(lm.processor.batch_decode(new_tokens, skip_special_tokens=True))
    return [a.strip() for a in answers]
