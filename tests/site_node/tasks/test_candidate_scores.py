"""Candidate log-probabilities after the model's reasoning: the cached scorer equals one full forward pass each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from site_node.model.generate import chat_text, generate_answers
from site_node.model.loading import LoadedModel, load_model
from site_node.model.scoring import candidate_ids, candidate_logprobs, model_input_size, reasoning_prefix
from site_node.synthetic.render import render_frame
from site_node.task_runtime import Answer, runtime_for


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
    """The candidate's log-probability as the model writes it: prefix + candidate tokenised as one text, one full
    forward pass, summed from the first token where that text's tokens leave the prefix's own."""
    prefix = chat_text(lm.processor, prompt) + reasoning_prefix(answer)
    own = lm.processor(text=[prefix], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    batch = dict(lm.processor(text=[prefix + continuation], images=[image], return_tensors="pt"))
    ids = batch["input_ids"][0].tolist()
    start = next(i for i, (a, b) in enumerate(zip(own, ids, strict=False)) if a != b)
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(**batch).logits.float(), -1)
    return float(sum(logp[0, j - 1, ids[j]] for j in range(start, len(ids))))


@pytest.mark.parametrize("task", ["cvs", "triplet"])
def test_cached_scores_equal_full_forward_passes(lm: LoadedModel, task: str) -> None:
    rt = runtime_for(task)
    candidates = rt.candidates()
    image = Image.new("RGB", (160, 120), (150, 70, 60))
    answers = ["<think>L1: hook, cystic duct.</think><answer>C1: yes", "I see the liver."]
    got = candidate_logprobs(lm, [image, image], rt.task.render_prompt(), answers, candidates, chunk=7)
    assert [set(g) for g in got] == [set(candidates)] * 2
    for key in list(candidates)[:3] + list(candidates)[-2:]:
        for row, answer in enumerate(answers):
            ref = _full_forward(lm, image, rt.task.render_prompt(), answer, candidates[key])
            assert got[row][key] == pytest.approx(ref, abs=1e-3)
    assert got[0] != got[1]  # the reasoning prefix matters


@pytest.mark.parametrize(
    ("prefix", "candidate", "drop"),
    [
        # the tag's '>' merges with the answer's first letters: '>grasper', as the warm-up's targets were tokenised
        ("<think>L1: grasper.</think><answer>", "grasper,grasp,specimen_bag</answer>", 1),
        ("<think>L1: grasper.</think><answer>", "C1: yes; C2: no; C3: no</answer>", 1),
        ("<think>L1: grasper.</think><answer> ", "hook [0.10, 0.20, 0.30, 0.40]</answer>", 1),  # ' hook'
    ],
)
def test_candidates_are_tokenised_with_the_prefix(lm: LoadedModel, prefix: str, candidate: str, drop: int) -> None:
    """Tokenised on its own, '<answer>' + 'grasper' became '>', 'g', 'rasper': a sequence the model never writes,
    which scored the model's own greedy answer below unrelated triplets (triplet AP near chance in the demo)."""
    tok = lm.processor.tokenizer
    _, dropped, (cont,) = candidate_ids(tok, prefix, {"k": candidate})
    whole = tok(prefix + candidate, add_special_tokens=False)["input_ids"]
    assert dropped == drop
    assert cont == whole[len(whole) - len(cont) :]
    assert tok(prefix, add_special_tokens=False)["input_ids"][: len(whole) - len(cont)] == whole[: -len(cont)]


def test_the_greedy_answer_is_the_top_candidate(lm: LoadedModel) -> None:
    """Replays the demo's finding: a source-domain frame's greedy CVS answer must be the candidate scored highest."""
    rt = runtime_for("cvs")
    prompt = rt.task.render_prompt()
    for phase in (0, 2, 4):
        image = Image.fromarray(render_frame(phase, 0.0, np.random.default_rng(phase)))
        (answer,) = generate_answers(lm, [image], prompt, max_new_tokens=80)
        (scores,) = candidate_logprobs(lm, [image], prompt, [answer], rt.candidates())
        parsed = rt.parse(Answer(answer, None, image.size))
        assert parsed is not None, answer
        assert max(scores, key=scores.__getitem__) == ",".join("yes" if c else "no" for c in parsed), (answer, scores)


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
