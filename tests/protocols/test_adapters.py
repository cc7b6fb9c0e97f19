"""Adapter wire encoding: bit-exact round trips, payload size, refusals, PEFT directory hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from protocols.adapters import (
    ADAPTER_ARRAY,
    adapter_sha256,
    decode_state,
    encode_state,
    serialized_nbytes,
    state_nbytes,
    write_peft_dir,
)
from protocols.errors import ContractError, ProtocolError
from protocols.finetune import LoraPlan

# LoRA r=16 shapes of ONE 7B decoder layer (hidden 3584, 4 KV heads x 128, MLP 18944).
_7B_LAYER = {
    "q_proj": (3584, 3584),
    "k_proj": (512, 3584),
    "v_proj": (512, 3584),
    "o_proj": (3584, 3584),
    "gate_proj": (18944, 3584),
    "up_proj": (18944, 3584),
    "down_proj": (3584, 18944),
}


def lora_layer_state(rank: int = 16, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    gen = gen or torch.Generator().manual_seed(0)
    state = {}
    for name, (out_f, in_f) in _7B_LAYER.items():
        part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        prefix = f"base_model.model.model.language_model.layers.0.{part}.{name}"
        state[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen)
        state[f"{prefix}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 1e-3
    return state


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def test_bf16_round_trip_is_bit_exact_for_every_bit_pattern() -> None:
    # All 65,536 bf16 bit patterns, NaN payloads, infinities, -0.0 and subnormals included.
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).reshape(256, 256)
    state = {"x.lora_A.weight": every, "y.lora_B.weight": every[:3, :5].clone()}
    arrays, meta = encode_state(state, "bf16")
    assert arrays[ADAPTER_ARRAY].dtype == np.uint16 and meta["wire-dtype"] == "bf16"
    back = decode_state(arrays, meta)
    for k in state:
        assert back[k].dtype == torch.bfloat16 and back[k].shape == state[k].shape
        assert torch.equal(bits(back[k]), bits(state[k]))


def test_fp32_source_is_rounded_once_as_torch_rounds() -> None:
    state = lora_layer_state(rank=2)
    back = decode_state(*encode_state(state, "bf16"))
    for k, v in state.items():
        assert torch.equal(bits(back[k]), bits(v.to(torch.bfloat16)))


@pytest.mark.parametrize("wire", ["fp16", "fp32"])
def test_other_wire_dtypes_round_trip(wire: str) -> None:
    state = {"a.lora_A.weight": torch.randn(4, 6, generator=torch.Generator().manual_seed(1))}
    cast = {"fp16": torch.float16, "fp32": torch.float32}[wire]
    back = decode_state(*encode_state(state, wire))
    assert back["a.lora_A.weight"].dtype == cast
    assert torch.equal(bits(back["a.lora_A.weight"]), bits(state["a.lora_A.weight"].to(cast)))


def test_decoded_tensors_do_not_alias_the_message() -> None:
    arrays, meta = encode_state({"a.lora_A.weight": torch.ones(2, 2)}, "fp32")
    back = decode_state(arrays, meta)
    arrays[ADAPTER_ARRAY][:] = 7
    assert torch.equal(back["a.lora_A.weight"], torch.ones(2, 2))


def test_payload_is_within_5_percent_of_the_adapter_in_its_wire_dtype() -> None:
    state = lora_layer_state()
    expected = state_nbytes(state, "bf16")
    assert expected == 1_441_792 * 2  # one 7B layer's LoRA parameters x 2 bytes (x28 layers = 80.7 MB)
    arrays, meta = encode_state(state, "bf16")
    assert sum(a.nbytes for a in arrays.values()) == expected
    assert abs(serialized_nbytes(arrays) / expected - 1) < 0.001  # as Flower serialises (np.save)
    # A tiny adapter too (rank 4, hidden 64): one array keeps the per-array header negligible.
    tiny = {f"l{i}.lora_A.weight": torch.zeros(4, 64) for i in range(14)}
    tiny.update({f"l{i}.lora_B.weight": torch.zeros(64, 4) for i in range(14)})
    arrays, meta = encode_state(tiny, "bf16")
    assert serialized_nbytes(arrays) / state_nbytes(tiny, "bf16") < 1.01  # names travel in `meta`, a config record


def _set(arrays: dict, key: str, value: object) -> None:
    arrays[key] = value


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a, m: _set(a, ADAPTER_ARRAY, a[ADAPTER_ARRAY].astype(np.float32)), r"expected uint16 of shape \(12,\)"),
        (lambda a, m: _set(a, ADAPTER_ARRAY, a[ADAPTER_ARRAY][:-1]), r"got uint16 of shape \(11,\)"),
        (lambda a, m: _set(a, "extra", a[ADAPTER_ARRAY]), "one array 'adapter'"),
        (lambda a, m: m.update({"wire-dtype": "int4"}), "wire dtype must be one of .* got 'int4'"),
        (lambda a, m: m.update({"encoding": "other/9"}), "encoding must be"),
        (lambda a, m: m.pop("tensors"), "'tensors' list"),
        (lambda a, m: m.update({"tensors": '[["x", [2, 3]], ["x", [2, 3]]]'}), "names a tensor twice"),
    ],
)
def test_decode_refuses_what_does_not_match_its_metadata(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    arrays, meta = encode_state({"x.lora_A.weight": torch.zeros(2, 3), "x.lora_B.weight": torch.zeros(3, 2)}, "bf16")
    mutate(arrays, meta)
    with pytest.raises(ContractError, match=message):
        decode_state(arrays, meta)


def test_encode_refuses_non_float_and_empty() -> None:
    with pytest.raises(ContractError, match="floating-point"):
        encode_state({"a": torch.zeros(2, dtype=torch.int64)}, "bf16")
    with pytest.raises(ContractError, match="empty"):
        encode_state({}, "bf16")


def test_peft_dir_files_and_hash(tmp_path: Path) -> None:
    state = {
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 4),
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(4, 2),
    }
    sha = write_peft_dir(state, LoraPlan(rank=2, alpha=4), "/models/surg-r1", tmp_path / "r1", dtype="bf16")
    config = json.loads((tmp_path / "r1" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4 and config["peft_type"] == "LORA"
    assert "language_model" in config["target_modules"]
    assert sha == adapter_sha256(tmp_path / "r1") and len(sha) == 64
    assert write_peft_dir(state, LoraPlan(rank=2, alpha=4), "/models/surg-r1", tmp_path / "r1b", dtype="bf16") == sha
    state_changed = {k: v + 1 for k, v in state.items()}
    assert write_peft_dir(state_changed, LoraPlan(rank=2, alpha=4), "/models/surg-r1", tmp_path / "r2") != sha
    with pytest.raises(ProtocolError, match="lora_A/lora_B"):
        write_peft_dir({"model.embed.weight": torch.ones(1)}, LoraPlan(), "m", tmp_path / "bad")
