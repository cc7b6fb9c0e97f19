"""Fine-tuning plan: defaults, validation errors that name the value, canonical dict for hashing."""

from __future__ import annotations

import json
import re

import pytest

from protocols.errors import ProtocolError
from protocols.finetune import (
    DEFAULT_TARGET_MODULES,
    DpMode,
    FinetunePlan,
    LoraPlan,
    OptimizerKind,
    WireDtype,
    parse_finetune,
)

BASE = {"trainers": ["a", "b"], "local_steps": 5}


def test_defaults_follow_the_issue() -> None:
    plan = parse_finetune(BASE, "s.yaml")
    assert plan.trainers == ("a", "b") and plan.local_steps == 5 and plan.epochs is None
    assert plan.lora.target_modules == DEFAULT_TARGET_MODULES and plan.lora.rank == 16
    assert plan.optimizer is OptimizerKind.ADAMW and plan.wire_dtype is WireDtype.BF16 and plan.dp is None


def test_default_targets_are_the_language_model_only() -> None:
    regex = re.compile(LoraPlan().peft_target_regex())
    for name in DEFAULT_TARGET_MODULES:
        part = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
        assert regex.fullmatch(f"model.language_model.layers.27.{part}.{name}")
    # The vision tower has gate/up/down_proj too; they must stay untouched.
    for name in (
        "model.visual.blocks.0.mlp.gate_proj",
        "model.visual.blocks.3.attn.qkv",
        "lm_head",
        "model.visual.merger.mlp.0",
    ):
        assert not regex.fullmatch(name)


def test_full_plan_parses_and_round_trips_through_to_dict() -> None:
    data = {
        "trainers": ["a"],
        "epochs": 1.5,
        "batch_size": 8,
        "sample_every_s": 2,
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "optimizer": "sgd",
        "lr": 0.01,
        "wire_dtype": "fp16",
        "augment": False,
        "init_seed": 7,
        "dp": {"target_epsilon": 8, "delta": 1e-5, "max_grad_norm": 0.5, "mode": "hooks"},
    }
    plan = parse_finetune(data, "s.yaml")
    assert plan.lora.target_modules == ("q_proj", "v_proj") and plan.dp is not None
    assert plan.dp.mode is DpMode.HOOKS and plan.dp.noise_multiplier is None
    canonical = plan.to_dict()
    assert json.loads(json.dumps(canonical)) == canonical  # JSON-ready for the protocol hash
    assert parse_finetune(canonical, "again") == plan


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trainers": []}, r"trainers .* got \(\)"),
        ({"trainers": ["a", "a"]}, "unique site names"),
        ({"trainers": "a"}, "trainers must be a list, got str"),
        ({"local_steps": 0}, r"local_steps must be an integer in \[1, 1000000\], got 0"),
        ({"epochs": 1.0}, "exactly one of local_steps or epochs"),
        ({"batch_size": 2.5}, "batch_size .* got 2.5"),
        ({"lr": 3}, r"lr must be in \(0, 1\), got 3"),
        ({"optimizer": "adam"}, r"optimizer must be one of \['adamw', 'sgd'\], got 'adam'"),
        ({"wire_dtype": "int8"}, "wire_dtype must be one of .* got 'int8'"),
        ({"lora": {"rank": 0}}, "lora.rank .* got 0"),
        ({"lora": {"dropout": 1.0}}, r"lora.dropout must be in \[0, 1\), got 1.0"),
        ({"lora": {"target_modules": ["q_proj", "bad-name"]}}, "target_modules .* 'bad-name'"),
        ({"lora": {"rnk": 4}}, r"unknown keys \['rnk'\]"),
        ({"dp": {"target_epsilon": 8}}, r"dp is missing \['delta'\]"),
        ({"dp": {"target_epsilon": -1, "delta": 1e-5}}, "target_epsilon .* got -1"),
        ({"dp": {"target_epsilon": 8, "delta": 0.5}}, "delta .* got 0.5"),
        ({"dp": {"target_epsilon": 8, "delta": 1e-5, "mode": "functorch"}}, "dp.mode .* got 'functorch'"),
        ({"dp": {"target_epsilon": 8, "delta": 1e-5, "noise_multiplier": 0}}, "noise_multiplier .* got 0"),
        ({"stepz": 3}, r"unknown keys \['stepz'\]"),
    ],
)
def test_invalid_plans_name_source_and_value(patch: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse_finetune({**BASE, **patch}, "study.yaml")
    assert str(info.value).startswith("study.yaml")


def test_missing_required_keys() -> None:
    with pytest.raises(ProtocolError, match="trainers is required"):
        parse_finetune({"local_steps": 1}, "s")
    with pytest.raises(ProtocolError, match="needs local_steps or epochs"):
        parse_finetune({"trainers": ["a"]}, "s")
    with pytest.raises(ProtocolError, match="must be a mapping, got list"):
        parse_finetune(["a"], "s")


def test_trainers_must_be_study_sites() -> None:
    plan = FinetunePlan(trainers=("a", "b"), local_steps=1)
    plan.check_sites(["a", "b", "held-out"])
    assert plan.evaluators_only(["a", "b", "held-out"]) == ("held-out",)
    with pytest.raises(ProtocolError, match=r"\['b'\] are not among the study's sites"):
        plan.check_sites(["a", "c"], "s.yaml")
