"""Streaming FedAvg against a hand computation; refusals; storage as a PEFT directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hub.aggregation import StreamingFedAvg, write_peft_adapter
from protocols.adapters import adapter_sha256, encode_state
from protocols.errors import ContractError
from protocols.finetune import LoraPlan

KEY_A = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
KEY_B = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight"


def reply(a: list[list[float]], b: list[float], wire: str = "fp32") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    f32 = torch.float32
    return encode_state({KEY_A: torch.tensor(a, dtype=f32), KEY_B: torch.tensor(b, dtype=f32).reshape(2, 1)}, wire)


def test_weighted_mean_matches_a_hand_computation() -> None:
    agg = StreamingFedAvg()
    agg.add(*reply([[1, 2], [3, 4]], [1, -1]), num_examples=10, site="a")
    agg.add(*reply([[5, 6], [7, 8]], [0, 2]), num_examples=30, site="b")
    agg.add(*reply([[0, 0], [-4, 8]], [2, 0]), num_examples=60, site="c")
    out = agg.result("fp32")
    # By hand: (10*x_a + 30*x_b + 60*x_c) / 100
    # A[0,0] = (10 + 150 + 0)/100 = 1.6      A[0,1] = (20 + 180 + 0)/100 = 2.0
    # A[1,0] = (30 + 210 - 240)/100 = 0.0    A[1,1] = (40 + 240 + 480)/100 = 7.6
    # B[0] = (10 + 0 + 120)/100 = 1.3        B[1] = (-10 + 60 + 0)/100 = 0.5
    assert torch.equal(out[KEY_A], torch.tensor([[1.6, 2.0], [0.0, 7.6]], dtype=torch.float32))
    assert torch.equal(out[KEY_B], torch.tensor([[1.3], [0.5]], dtype=torch.float32))
    assert agg.num_examples == 100 and agg.sites == ["a", "b", "c"]


def test_bf16_result_is_the_exact_mean_rounded_once() -> None:
    gen = torch.Generator().manual_seed(3)
    states = [{KEY_A: torch.randn(4, 8, generator=gen), KEY_B: torch.randn(8, 4, generator=gen)} for _ in range(4)]
    weights = [3, 1, 7, 2]
    agg = StreamingFedAvg()
    for s, w in zip(states, weights, strict=False):
        agg.add(*encode_state(s, "bf16"), num_examples=w)
    out = agg.result("bf16")
    for k in (KEY_A, KEY_B):
        exact = sum(w * s[k].to(torch.bfloat16).double() for s, w in zip(states, weights, strict=False)) / sum(weights)
        assert out[k].dtype == torch.bfloat16
        assert torch.equal(out[k].view(torch.int16), exact.to(torch.bfloat16).view(torch.int16))


def test_order_of_replies_does_not_change_the_bits() -> None:
    gen = torch.Generator().manual_seed(5)
    replies = [(encode_state({KEY_A: torch.randn(3, 5, generator=gen)}, "bf16"), n) for n in (5, 11, 2)]
    results = []
    for order in ([0, 1, 2], [2, 0, 1]):
        agg = StreamingFedAvg()
        for i in order:
            agg.add(*replies[i][0], num_examples=replies[i][1])
        results.append(agg.result("bf16")[KEY_A].view(torch.int16))
    assert torch.equal(results[0], results[1])


def test_a_reply_is_not_kept_after_it_is_added() -> None:
    arrays, meta = reply([[1, 1], [1, 1]], [1, 1])
    agg = StreamingFedAvg()
    agg.add(arrays, meta, num_examples=1)
    arrays["adapter"][:] = 99  # the message buffer is reused or freed: the sum must not change
    assert torch.equal(agg.result("fp32")[KEY_A], torch.ones(2, 2))


def test_refusals_name_the_site() -> None:
    agg = StreamingFedAvg()
    agg.add(*reply([[1, 2], [3, 4]], [1, 1]), num_examples=1, site="a")
    other = encode_state({KEY_A: torch.zeros(3, 2), KEY_B: torch.zeros(2, 1)}, "fp32")
    with pytest.raises(ContractError, match="site b: adapter tensors differ"):
        agg.add(*other, num_examples=1, site="b")
    with pytest.raises(ContractError, match="site c: num-examples must be a positive integer, got 0"):
        agg.add(*reply([[1, 2], [3, 4]], [1, 1]), num_examples=0, site="c")
    with pytest.raises(ContractError, match="no adapter was added"):
        StreamingFedAvg().result()


def test_global_adapter_is_stored_with_its_sha256(tmp_path: Path) -> None:
    agg = StreamingFedAvg()
    agg.add(*reply([[1, 2], [3, 4]], [1, 1], "bf16"), num_examples=4, site="a")
    stored = write_peft_adapter(
        agg.result("bf16"),
        LoraPlan(rank=1, alpha=2),
        "surg-r1",
        tmp_path / "round-1",
        num_examples=agg.num_examples,
        sites=tuple(agg.sites),
    )
    assert (tmp_path / "round-1" / "adapter_model.safetensors").is_file()
    assert stored.sha256 == adapter_sha256(tmp_path / "round-1") and stored.sites == ("a",)
