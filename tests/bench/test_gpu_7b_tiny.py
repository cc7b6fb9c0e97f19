"""The GPU benchmark script, run end to end on the tiny configuration on the CPU; the 7B LoRA size on meta."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from peft import get_peft_model
from transformers import Qwen2_5_VLForConditionalGeneration

from protocols.finetune import LoraPlan
from site_node.synthetic.tiny_model import TinyConfig, build_tokenizer
from site_node.training.lora import peft_config

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_7b.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_7b", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_everything(bench: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    out = bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--work",
            str(tmp_path / "w"),
            "--results",
            str(results),
            "--batches",
            "1,8,32",
            "--eval-rounds",
            "1",
            "--new-tokens",
            "3",
            "--lora-steps",
            "1",
            "--train-batch",
            "2",
            "--dp-batch",
            "2",
        ]
    )
    assert [e["batch"] for e in out["eval"]] == [1, 8, 32]
    assert all(e["frames_per_s"] > 0 and e["gen_tokens_per_s"] > 0 for e in out["eval"])
    assert len(out["manifest_sha256"]) == 64 and out["manifest_hash_s"] >= 0
    cfg = TinyConfig()  # r=16 on 7 projections per layer: A (16 x in) + B (out x 16)
    kv = cfg.hidden // cfg.heads * cfg.kv_heads
    per_layer = 16 * (2 * (cfg.hidden + cfg.hidden) + 2 * (cfg.hidden + kv) + 3 * (cfg.hidden + cfg.intermediate))
    assert out["lora"]["trainable"] == cfg.layers * per_layer and out["lora"]["checkpointing"] is True
    assert out["ghost"]["step_s"] > 0 and out["ghost"]["noise_only_step_s"] > 0
    assert out["wire"]["bit_exact"] is True
    eng = out["engine"]  # decode roofline (none on a CPU), engine images/s, vision prefill
    assert eng["decode"]["steps_per_s"] > 0 and eng["decode"]["roofline_steps_per_s"] is None
    assert eng["decode"]["weight_bytes"] == 4 * sum(
        p.numel()
        for n, p in Qwen2_5_VLForConditionalGeneration(
            bench.build_config(build_tokenizer(TinyConfig()), TinyConfig())
        ).named_parameters()
        if ".visual." not in f".{n}"
    )
    assert [(e["batch"], e["tokens"]) for e in eng["images"]] == [(1, 4), (2, 4)]
    assert all(e["images_per_s"] > 0 for e in eng["images"]) and eng["vision"]["s_per_image"] > 0
    text = results.read_text()
    assert "decode steps/s at batch 1" in text and "vision prefill" in text
    assert "CPU" in text and "evaluation, batch 32" in text and "opacus ghost step" in text
    assert not (tmp_path / "w" / "model").exists()  # 17 GB on a GPU box: removed unless --keep


def test_7b_lora_is_the_size_the_design_states(bench: ModuleType) -> None:
    """Built on the meta device (no memory): LoRA r=16 on the LM's attention + MLP = 40,370,176 parameters."""
    config = bench.config_7b(build_tokenizer(TinyConfig()))
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    peft_model = get_peft_model(model, peft_config(LoraPlan()))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == bench.LORA_7B_PARAMS
    assert not any(".visual." in n for n in names) and len(names) == 28 * 7 * 2
