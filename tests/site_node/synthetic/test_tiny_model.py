"""The tiny Qwen2.5-VL: a complete directory that loads through the real (local-only) code path, built reproducibly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from protocols.errors import ConfigError, ModelError
from site_node.model import loading
from site_node.model.loading import load_model, resolve_device, resolve_dtype
from site_node.synthetic.tiny_model import SPECIAL_TOKENS, build_tiny_model, cache_key, ensure_tiny_model


def test_model_directory_is_complete_and_reads_as_stock_qwen2_5_vl(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "generation_config.json",
    } <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["text_config"]["hidden_size"] == 64 and config["text_config"]["num_hidden_layers"] == 2
    processor = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert processor["processor_class"] == "Qwen2_5_VLProcessor"
    assert processor["image_processor"]["size"]["longest_edge"] == 112 * 112
    assert processor["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"


def test_load_model_takes_the_local_only_path(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = loading.AutoModelForImageTextToText.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForImageTextToText, "from_pretrained", spy)
    lm = load_model(tiny_model_dir)
    assert seen and seen[0]["local_files_only"] is True
    assert type(lm.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert next(lm.model.parameters()).dtype == torch.float32
    assert not lm.model.training
    assert lm.processor.tokenizer.padding_side == "left"
    # every Qwen special token is one token of its own
    for token in SPECIAL_TOKENS:
        assert len(lm.processor.tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert lm.model.generation_config.eos_token_id[0] == lm.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_missing_or_incomplete_model_dirs_are_model_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"broken.*weights"):
        load_model(broken)
    (broken / "config.json").unlink()
    with pytest.raises(ModelError, match=r"config.*weights"):
        load_model(broken)


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
        with pytest.raises(ConfigError, match="cuda"):
            resolve_device("cuda")
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="'tpu'"):
        resolve_device("tpu")


def test_build_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", seed=3, warmup=False, progress=False)
    b = build_tiny_model(tmp_path / "b", seed=3, warmup=False, progress=False)
    c = build_tiny_model(tmp_path / "c", seed=4, warmup=False, progress=False)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert load_model(a).model is not None


def test_ensure_tiny_model_is_cached_per_source_and_seed(tiny_model_dir: Path) -> None:
    assert tiny_model_dir.name == f"tiny-qwen2_5_vl-{cache_key(0)}"
    stamp = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tiny_model_dir.parent) == tiny_model_dir  # no rebuild
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert cache_key(1) != cache_key(0)
