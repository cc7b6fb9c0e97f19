"""Candidate log-probabilities after the model's reasoning: the cached scorer equals one full forward pass each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from site_node.model.generate import chat_text
from site_node.model.loading import LoadedModel, load_model
from site_node.model.scoring import candidate_logprobs, model_input_size, reasoning_prefix
from site_node.task_runtime import runtime_for


@pytest.mark.parametrize(
    ("answer", "prefix"),
    [
        ("<think>L1: hook.</think><answer>C1: yes", "<think>L1: hook.</think><answer>"),
        (
            "<think>a</think><answer>x</answer> then <ANSWER>y</answer>",
            "<think>a</think><answer>x</answer> then <answer>",
        ),
        ("<think>no answer tag</think>  ", "<think>no answer tag</think><answer>"),
    ],
)
def test_reasoning_prefix(answer: str, prefix: str) -> None:
    assert reasoning_prefix(answer) == prefix


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


def _full_forward(lm: LoadedModel, image: Image.Image, prompt: str, answer: str, continuation: str) -> float:
    prefix = chat_text(lm.processor, prompt) + reasoning_prefix(answer)
    enc = lm.processor(text=[prefix], images=[image], return_tensors="pt")
    ids = lm.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    n = enc["input_ids"].shape[1]
    batch = {
        "input_ids": torch.cat([enc["input_ids"], torch.tensor([ids])], 1),
        "pixel_values": enc["pixel_values"],
        "image_grid_thw": enc["image_grid_thw"],
        "mm_token_type_ids": torch.cat([enc["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)], 1),
    }
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(**batch).logits.float(), -1)
    return float(sum(logp[0, n - 1 + j, t] for j, t in enumerate(ids)))


@pytest.mark.parametrize("task", ["cvs", "triplet"])
def test_cached_scores_equal_full_forward_passes(lm: LoadedModel, task: str) -> None:
    rt = runtime_for(task)
    candidates = rt.candidates()
    image = Image.new("RGB", (160, 120), (150, 70, 60))
    answers = ["<think>L1: hook, cystic duct.</think><answer>C1: yes", "I see the liver."]
    got = candidate_logprobs(lm, [image, image], rt.task.render_prompt(), answers, candidates, chunk=7)
    assert [set(g) for g in got] == [set(candidates)] * 2
    for key in list(candidates)[:3] + list(candidates)[-2:]:
        ref = _full_forward(lm, image, rt.task.render_prompt(), answers[1], candidates[key])
        assert got[1][key] == pytest.approx(ref, abs=1e-3)
    assert got[0] != got[1]  # the reasoning prefix matters


def test_model_input_size_is_what_the_processor_feeds(lm: LoadedModel) -> None:
    w, h = model_input_size(lm, Image.new("RGB", (320, 240)))
    assert (w, h) != (320, 240) and w % 14 == 0 and h % 14 == 0 and w > h


def test_scores_through_a_lora_adapter(lm: LoadedModel) -> None:
    """The engine evaluates with an adapter attached (a PEFT wrapper): a fresh LoRA (B = 0) changes nothing."""
    import dataclasses

    from peft import LoraConfig, get_peft_model

    rt = runtime_for("cvs")
    image, answers = Image.new("RGB", (160, 120), (90, 90, 140)), ["<think>L1.</think><answer>"]
    plain = candidate_logprobs(lm, [image], rt.task.render_prompt(), answers, rt.candidates())
    wrapped = get_peft_model(lm.model, LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        peft_lm = dataclasses.replace(lm, model=wrapped)
        got = candidate_logprobs(peft_lm, [image], rt.task.render_prompt(), answers, rt.candidates())
    finally:
        wrapped.unload()
    assert got[0] == pytest.approx(plain[0], abs=1e-4)
