"""GRPO settings of a fine-tuning plan: defaults, case table of refusals naming the value, hashing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocols.errors import ProtocolError
from protocols.finetune import FinetunePlan, parse_finetune
from protocols.grpo import DEFAULT_REWARD_WEIGHTS, FinetuneMethod, GrpoPlan, RewardKind

SFT = {"trainers": ["a", "b"], "local_steps": 5}
GRPO: dict[str, Any] = {"trainers": ["a", "b"], "method": "grpo", "grpo": {}}


def test_method_defaults_to_sft_and_sft_hash_keys_are_unchanged() -> None:
    plan = parse_finetune(SFT, "s.yaml")
    assert plan.method is FinetuneMethod.SFT and plan.grpo is None
    assert "method" not in plan.to_dict() and "grpo" not in plan.to_dict()


def test_grpo_defaults() -> None:
    plan = parse_finetune(GRPO, "s.yaml")
    assert plan.method is FinetuneMethod.GRPO and plan.grpo == GrpoPlan()
    g = plan.grpo
    assert g.clip_epsilon == 0.2 and g.group_size == 4 and g.reward_weights == DEFAULT_REWARD_WEIGHTS
    assert plan.step_plan() == (g.local_steps, None, g.frames_per_step)
    assert parse_finetune(SFT, "s").step_plan() == (5, None, 4)


def test_full_grpo_block_round_trips_and_is_hashed() -> None:
    block = {
        "group_size": 8,
        "local_steps": 3,
        "lr": 0.002,
        "clip_epsilon": 0.3,
        "beta": 0.0,
        "temperature": 0.9,
        "top_p": 0.95,
        "max_completion_tokens": 64,
        "frames_per_step": 2,
        "reward_weights": {"format": 0.5, "phase": 1, "triplet": 0.5, "cvs": 0.5, "localization": 0.2},
    }
    plan = parse_finetune({**GRPO, "grpo": block}, "s.yaml")
    assert plan.grpo is not None and plan.grpo.reward_weights[RewardKind.TRIPLET] == 0.5
    canonical = plan.to_dict()
    assert json.loads(json.dumps(canonical)) == canonical
    assert canonical["method"] == "grpo" and canonical["grpo"]["beta"] == 0.0 and "lr" not in canonical
    assert parse_finetune(canonical, "again") == plan
    other = parse_finetune({**GRPO, "grpo": {**block, "clip_epsilon": 0.25}}, "s.yaml")
    assert other.to_dict() != canonical  # every field reaches the protocol hash


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"group_size": 1}, r"group_size must be an integer in \[2, 64\], got 1"),
        ({"group_size": 4.0}, r"group_size .* got 4.0"),
        ({"local_steps": 0}, r"grpo.local_steps must be an integer in \[1, 100000\], got 0"),
        ({"lr": 0}, r"grpo.lr must be in \(0, 1\), got 0"),
        ({"clip_epsilon": 1.5}, r"clip_epsilon must be in \(0, 1\), got 1.5"),
        ({"clip_epsilon": True}, "clip_epsilon must be a finite number, got True"),
        ({"beta": -0.1}, r"beta must be a number in \[0.0, 10.0\], got -0.1"),
        ({"temperature": 0}, r"temperature must be in \(0, 5\], got 0"),
        ({"top_p": 1.2}, r"top_p must be in \(0, 1\], got 1.2"),
        ({"max_completion_tokens": 0}, r"max_completion_tokens must be an integer in \[1, 8192\], got 0"),
        ({"frames_per_step": "4"}, "frames_per_step must be an integer .* got '4'"),
        ({"reward_weights": {"speed": 1}}, r"reward_weights: unknown keys \['speed'\]"),
        ({"reward_weights": {"phase": -1}}, r"reward_weights.phase must be a number in \[0.0, 100.0\], got -1"),
        ({"reward_weights": {"phase": 0}}, "needs a positive weight"),
        ({"reward_weights": {}}, "must map reward names to weights"),
        ({"reward_weights": [1]}, "reward_weights must be a mapping, got list"),
        ({"group": 4}, r"finetune.grpo: unknown keys \['group'\]"),
    ],
)
def test_invalid_grpo_block_names_the_value(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        parse_finetune({**GRPO, "grpo": patch}, "study.yaml")
    assert str(err.value).startswith("study.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**SFT, "method": "ppo"}, r"method must be one of \['sft', 'grpo'\], got 'ppo'"),
        ({"trainers": ["a"], "method": "grpo"}, "method 'grpo' and finetune.grpo .absent. disagree"),
        ({**SFT, "grpo": {}}, "method 'sft' and finetune.grpo .set. disagree"),
        ({**GRPO, "local_steps": 3}, r"\['local_steps'\] are SFT settings"),
        ({**GRPO, "lr": 0.1, "batch_size": 2}, r"\['batch_size', 'lr'\] are SFT settings"),
        ({**GRPO, "grpo": None}, "finetune.grpo must be a mapping, got NoneType"),
    ],
)
def test_method_and_block_must_agree(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_finetune(data, "study.yaml")


def test_dataclass_refuses_sft_steps_with_grpo() -> None:
    with pytest.raises(ProtocolError, match="are SFT settings"):
        FinetunePlan(trainers=("a",), local_steps=2, method=FinetuneMethod.GRPO, grpo=GrpoPlan())
