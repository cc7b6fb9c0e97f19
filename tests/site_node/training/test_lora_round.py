"""LoRA rounds on the tiny model: the adapter changes, the base model does not, and the PEFT export loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText

from protocols.errors import ConfigError, ContractError
from protocols.finetune import LoraPlan, parse_finetune
from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target
from site_node.model.loading import LoadedModel
from site_node.store import DataStore
from site_node.training.examples import encode_batch
from site_node.training.lora import (
    TrainResult,
    adapter_state,
    applied_adapter,
    attach_lora,
    detach_lora,
    load_global_adapter,
    save_peft_dir,
    sequence_losses,
    train_round,
)

FirstRound = tuple[TrainResult, dict[str, torch.Tensor], list[tuple]]
PLAN = parse_finetune(
    {
        "trainers": ["trainer"],
        "local_steps": 3,
        "batch_size": 2,
        "lr": 0.01,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
    },
    "test",
)


def _batch(lm: LoadedModel) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    images = [Image.new("RGB", (112, 84), (120, 60, 50)), Image.new("RGB", (112, 84), (60, 100, 50))]
    answers = [hierarchical_target("ClippingCutting", ["clipper"]), hierarchical_target("Preparation", [])]
    return encode_batch(lm.processor, images, answers, load_task("phase").render_prompt(), lm.device, lm.dtype)


@pytest.fixture(scope="module")
def first_round(lm: LoadedModel, store: DataStore) -> FirstRound:
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    hooks = _hooks(lm.model)
    calls: list[tuple] = []
    # Activation checkpointing as on a GPU, so its enable/disable is exercised too.
    result = train_round(
        lm, store, PLAN, None, seed=0, progress=lambda *a: calls.append(a), gradient_checkpointing=True
    )
    assert _hooks(lm.model) == hooks and not lm.model.is_activation_checkpointing
    return result, before, calls


def _hooks(model: torch.nn.Module) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()]


def test_round_changes_the_adapter_and_not_the_base(lm: LoadedModel, first_round: FirstRound) -> None:
    result, before, calls = first_round
    after = lm.model.state_dict()
    assert set(after) == set(before)  # no LoRA layers left behind
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not lm.model.training and all(p.requires_grad for p in lm.model.parameters())
    assert result.steps == 3 and result.num_examples > 0 and len(result.losses) == 3
    assert result.epsilon is None and torch.isfinite(torch.tensor(result.loss))
    b_norm = sum(float(v.norm()) for k, v in result.state.items() if ".lora_B." in k)
    assert b_norm > 0  # B starts at zero: any change means the adapter trained
    assert all(".language_model." in k for k in result.state)  # nothing in the vision tower
    assert calls[-1] == ("train", 3, 3) and any(c[0] == "frames" for c in calls)
    assert result.reply_metrics() == {"num-examples": result.num_examples, "steps": 3, "loss": result.loss}


def test_initial_adapter_is_the_same_at_every_site(lm: LoadedModel) -> None:
    states = []
    for _ in range(2):
        model = attach_lora(lm, LoraPlan(rank=4), init_seed=9)
        states.append(adapter_state(model))
        detach_lora(lm, model)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert all(float(v.abs().sum()) == 0 for k, v in states[0].items() if ".lora_B." in k)


def test_targets_that_match_nothing_are_a_config_error(lm: LoadedModel) -> None:
    with pytest.raises(ConfigError, match=r"\['qkv_fused'\] match no layer"):
        attach_lora(lm, LoraPlan(target_modules=("qkv_fused",)))
    assert not any("lora" in n for n, _ in lm.model.named_modules())


def test_next_round_starts_from_the_global_adapter(lm: LoadedModel, first_round: FirstRound) -> None:
    state = {k: v.to(torch.bfloat16) for k, v in first_round[0].state.items()}  # as it arrives from the wire
    model = attach_lora(lm, PLAN.lora)
    try:
        load_global_adapter(model, state)
        loaded = adapter_state(model)
        assert all(torch.equal(loaded[k], state[k].float()) for k in state)
        with pytest.raises(ContractError, match="missing"):
            load_global_adapter(model, dict(list(state.items())[1:]))
    finally:
        detach_lora(lm, model)


def test_per_sequence_loss_matches_the_model_loss(lm: LoadedModel) -> None:
    batch, labels = _batch(lm)
    one = {k: v[:1] for k, v in batch.items() if k not in ("pixel_values", "image_grid_thw")}
    n_patches = int(batch["image_grid_thw"][0].prod())
    one.update(pixel_values=batch["pixel_values"][:n_patches], image_grid_thw=batch["image_grid_thw"][:1])
    with torch.no_grad():
        ours = sequence_losses(lm.model, one, labels[:1])
        reference = lm.model(**one, labels=labels[:1]).loss
    assert torch.allclose(ours[0], reference, atol=1e-5)


def test_evaluation_with_the_adapter_and_peft_export(lm: LoadedModel, first_round: FirstRound, tmp_path: Path) -> None:
    result = first_round[0]
    batch, _ = _batch(lm)
    with torch.no_grad():
        base_logits = lm.model(**batch).logits
        with applied_adapter(lm, PLAN.lora, result.state) as adapted:
            adapted_logits = adapted.model(**batch).logits
            assert adapted.processor is lm.processor
        assert not torch.allclose(base_logits, adapted_logits)
        assert torch.equal(lm.model(**batch).logits, base_logits)  # the adapter is gone again
    out = tmp_path / "adapter"
    sha = save_peft_dir(result.state, PLAN, lm.path, out)
    assert len(sha) == 64
    base = AutoModelForImageTextToText.from_pretrained(lm.path, local_files_only=True, dtype=torch.float32)
    exported = PeftModel.from_pretrained(base, out)
    with torch.no_grad():
        assert torch.allclose(exported(**batch).logits, adapted_logits, atol=1e-5)
