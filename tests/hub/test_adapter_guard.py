"""A misbehaving trainer against the hub's FedAvg: refused adapters, capped weights, bounded updates (real tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from hub.adapter_guard import AdapterGuard, capped_weights
from hub.aggregation import StreamingFedAvg
from protocols.adapters import encode_state
from protocols.errors import ContractError, ProtocolError
from protocols.finetune import LoraPlan, parse_finetune

PREFIX = "base_model.model.model.language_model.layers.{i}.self_attn.{m}_proj"
LORA = LoraPlan(rank=2, alpha=4, target_modules=("q_proj", "v_proj"))


def adapter(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(2):
        for m in ("q", "v"):
            out[PREFIX.format(i=i, m=m) + ".lora_A.weight"] = torch.randn(2, 8, generator=gen) * scale
            out[PREFIX.format(i=i, m=m) + ".lora_B.weight"] = torch.randn(8, 2, generator=gen) * scale
    return out


def tampered(kind: str) -> dict[str, torch.Tensor]:
    state = adapter(9)
    key_a = PREFIX.format(i=0, m="q") + ".lora_A.weight"
    if kind == "nan":
        state[key_a][0, 0] = float("nan")
    elif kind == "inf":
        state[key_a][1, 3] = float("inf")
    elif kind == "rank":
        state[key_a] = torch.zeros(4, 8)
    elif kind == "base-weight":
        state["base_model.model.model.embed_tokens.weight"] = torch.zeros(8, 8)
    elif kind == "other-module":
        state[PREFIX.format(i=0, m="k") + ".lora_A.weight"] = torch.zeros(2, 8)
    elif kind == "extra-layer":
        state[PREFIX.format(i=5, m="q") + ".lora_A.weight"] = torch.zeros(2, 8)
        state[PREFIX.format(i=5, m="q") + ".lora_B.weight"] = torch.zeros(8, 2)
    elif kind == "huge":
        state[key_a] = state[key_a] * 1e6
    return state


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("rank", r"needs lora_A of shape \(2, in\)"),
        ("base-weight", "is not a LoRA weight of the target modules"),
        ("other-module", "is not a LoRA weight of the target modules"),
        ("extra-layer", "layout differs from the round's global adapter"),
        ("huge", "update norm .* exceeds the protocol's bound"),
    ],
)
def test_a_bad_adapter_is_refused_and_the_round_goes_on(kind: str, message: str) -> None:
    glob = adapter(0)
    agg = StreamingFedAvg("float64", AdapterGuard(LORA, glob, max_update_norm=5.0), max_share=1.0)
    agg.add(*encode_state(adapter(1), "fp32"), num_examples=10, site="a")
    with pytest.raises(ContractError, match=f"site evil: .*{message}"):
        agg.add(*encode_state(tampered(kind), "fp32"), num_examples=10, site="evil")
    agg.add(*encode_state(adapter(2), "fp32"), num_examples=30, site="b")
    out = agg.result("fp32")
    assert agg.sites == ["a", "b"]
    for k, v in out.items():
        expected = (10 * adapter(1)[k].double() + 30 * adapter(2)[k].double()) / 40
        assert torch.allclose(v.double(), expected, atol=1e-6)


def test_round_one_bounds_lora_b_without_a_global_adapter() -> None:
    guard = AdapterGuard(LORA, None, max_update_norm=1.0)
    guard.check(adapter(3), "a")  # small B: accepted, whatever A holds (it starts random at every site)
    big = adapter(3)
    big[PREFIX.format(i=1, m="v") + ".lora_B.weight"] += 10.0
    with pytest.raises(ContractError, match="site b: update norm"):
        guard.check(big, "b")


def test_inflated_num_examples_is_capped_at_the_share() -> None:
    # The attack: one site claims a billion examples to make the global adapter its own.
    glob = adapter(0)
    agg = StreamingFedAvg("float64", AdapterGuard(LORA, glob), max_share=0.5)
    for site, seed, n in (("a", 1, 100), ("b", 2, 300), ("evil", 3, 1_000_000_000)):
        agg.add(*encode_state(adapter(seed), "fp32"), num_examples=n, site=site)
    weights = agg.weights()
    assert weights == [100.0, 300.0, 400.0]  # evil capped to half of the total
    out = agg.result("fp32")
    for k, v in out.items():
        expected = (100 * adapter(1)[k].double() + 300 * adapter(2)[k].double() + 400 * adapter(3)[k].double()) / 800
        assert torch.allclose(v.double(), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "share", "expected"),
    [
        ({"a": 10, "b": 30, "c": 60}, 0.5, {"a": 10, "b": 30, "c": 40}),
        ({"a": 10, "b": 30, "c": 60}, 1.0, {"a": 10, "b": 30, "c": 60}),
        ({"a": 1, "b": 1000}, 0.5, {"a": 1, "b": 1}),
        ({"a": 5}, 0.5, {"a": 1}),
        # By hand: c and d capped at L with L = 0.4 * (1 + 1 + 2L)  ->  L = 4; total 10, each 40%.
        ({"a": 1, "b": 1, "c": 100, "d": 100}, 0.4, {"a": 1, "b": 1, "c": 4, "d": 4}),
    ],
)
def test_capped_weights(weights: dict[str, int], share: float, expected: dict[str, float]) -> None:
    out = capped_weights({k: float(v) for k, v in weights.items()}, share)
    assert out.keys() == expected.keys()
    for k, v in expected.items():
        assert math.isclose(out[k], v), (k, out)


def test_protocol_settings_are_validated() -> None:
    base = {"trainers": ["a"], "local_steps": 1}
    plan = parse_finetune(base)
    assert plan.max_site_share == 0.5 and plan.max_update_norm is None
    assert "max_site_share" not in plan.to_dict()  # protocols written before these keys keep their hash
    assert parse_finetune({**base, "max_update_norm": 3}).to_dict()["max_update_norm"] == 3.0
    for bad in ({"max_site_share": 0}, {"max_site_share": 1.5}, {"max_update_norm": -1}):
        with pytest.raises(ProtocolError):
            parse_finetune({**base, **bad})
