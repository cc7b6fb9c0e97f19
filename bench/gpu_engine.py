"""Engine measurements for bench/gpu_7b.py: decode steps/s against the HBM roofline, images/s, vision prefill."""

from __future__ import annotations

import time
from typing import Any

import torch
from PIL import Image

from protocols.tasks import load_task
from site_node.model.generate import chat_text, greedy_config
from site_node.model.loading import LoadedModel
from site_node.model.pipeline import EvalRequest, answer_frames, collate
from site_node.model.prefetch import FrameInput, encode_frame

# Memory bandwidth of the cards the roofline knows (bytes/s, vendor figures).
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth(device: torch.device) -> tuple[str, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_properties(device).name
    return next(((card, bw) for card, bw in HBM_BYTES_PER_S.items() if card in name), None)


def decode_weight_bytes(lm: LoadedModel) -> int:
    """Bytes of weights one decode step reads: the language model and its head (the vision tower is not used)."""
    visual = {id(p) for p in lm.model.model.visual.parameters()}
    return sum(p.numel() * p.element_size() for p in lm.model.parameters() if id(p) not in visual)


def _inputs(lm: LoadedModel, images: list[Image.Image]) -> list[FrameInput]:
    text = chat_text(lm.processor, load_task("phase").render_prompt())
    return [encode_frame(lm.processor, text, im, 0, i) for i, im in enumerate(images)]


def _generate_s(lm: LoadedModel, items: list[FrameInput], tokens: int) -> float:
    enc = collate(items, lm.processor.tokenizer.pad_token_id or 0, lm.device, lm.dtype)
    config = greedy_config(lm.model, tokens)
    config.min_new_tokens = tokens
    _sync(lm.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm.model.generate(**enc, generation_config=config)
    _sync(lm.device)
    return time.perf_counter() - t0


def decode_roofline(lm: LoadedModel, image: Image.Image, steps: int) -> dict[str, Any]:
    """Decode steps/s at batch 1 (the prefill subtracted) against bytes-of-weights / bandwidth."""
    items = _inputs(lm, [image])
    _generate_s(lm, items, 2)  # warm-up
    one, many = _generate_s(lm, items, 1), _generate_s(lm, items, steps + 1)
    steps_per_s = steps / max(many - one, 1e-9)
    weights = decode_weight_bytes(lm)
    card = bandwidth(lm.device)
    roof = card[1] / weights if card else None
    return {
        "steps_per_s": steps_per_s,
        "weight_bytes": weights,
        "card": card[0] if card else None,
        "roofline_steps_per_s": roof,
        "share_of_roofline": steps_per_s / roof if roof else None,
    }


def images_per_s(lm: LoadedModel, images: list[Image.Image], batch: int, tokens: int) -> dict[str, Any]:
    """The engine's batched path (one vision pass, generate) on prepared frames, answers forced to `tokens`."""
    items = _inputs(lm, images[:batch])
    req = EvalRequest(load_task("phase").render_prompt(), {}, tokens, batch, tokens)
    _sync(lm.device)
    t0 = time.perf_counter()
    n = sum(1 for _ in answer_frames(lm, items, req))
    _sync(lm.device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "tokens": tokens, "images_per_s": n / dt, "gen_tokens_per_s": n * tokens / dt}


def vision_prefill(lm: LoadedModel, images: list[Image.Image], batch: int) -> dict[str, Any]:
    """Seconds of the vision encoder per image, at the given batch."""
    enc = collate(_inputs(lm, images[:batch]), 0, lm.device, lm.dtype)
    with torch.inference_mode():
        lm.model.get_image_features(enc["pixel_values"][: len(enc["pixel_values"]) // batch], enc["image_grid_thw"][:1])
        _sync(lm.device)
        t0 = time.perf_counter()
        lm.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
        _sync(lm.device)
    return {"batch": batch, "s_per_image": (time.perf_counter() - t0) / batch}


def engine_bench(
    lm: LoadedModel, images: list[Image.Image], batches: list[int], answer_tokens: list[int], steps: int
) -> dict[str, Any]:
    return {
        "decode": decode_roofline(lm, images[0], steps),
        "images": [images_per_s(lm, images, b, t) for t in answer_tokens for b in batches],
        "vision": vision_prefill(lm, images, max(batches)),
    }


def markdown_rows(r: dict[str, Any]) -> list[str]:
    d = r["decode"]
    roof = (
        f"; roofline {d['roofline_steps_per_s']:.1f} steps/s on {d['card']} "
        f"({d['weight_bytes'] / 1e9:.2f} GB of weights per step): {d['share_of_roofline']:.0%}"
        if d["roofline_steps_per_s"]
        else f"; no HBM roofline for this device ({d['weight_bytes'] / 1e9:.3f} GB of weights per step)"
    )
    rows = [f"| decode steps/s at batch 1 | {d['steps_per_s']:.1f}{roof} |"]
    rows += [
        f"| engine, batch {e['batch']}, {e['tokens']}-token answers | {e['images_per_s']:.2f} images/s, "
        f"{e['gen_tokens_per_s']:.0f} tokens/s |"
        for e in r["images"]
    ]
    v = r["vision"]
    rows.append(f"| vision prefill (batch {v['batch']}) | {v['s_per_image'] * 1e3:.1f} ms per image |")
    return rows
