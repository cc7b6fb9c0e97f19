"""GRPO rounds on the tiny model: constant rewards change nothing, rewards move LoRA only, DP per video, budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from protocols.finetune import FinetunePlan, parse_finetune
from site_node.audit import AuditLog
from site_node.model.loading import LoadedModel
from site_node.policy import SitePolicy
from site_node.store import DataStore
from site_node.training.dp import PrivacyBudgetExceeded
from site_node.training.grpo_round import grpo_round
from site_node.training.guard import PrivacyContext
from site_node.training.ledger import SiteLedger
from site_node.training.lora import adapter_state, attach_lora, detach_lora

LORA = {"rank": 4, "alpha": 8, "dropout": 0.0}


def plan(**grpo: Any) -> FinetunePlan:
    block = {"group_size": 4, "local_steps": 2, "frames_per_step": 2, "lr": 0.02, "max_completion_tokens": 24, **grpo}
    return parse_finetune({"trainers": ["t"], "method": "grpo", "grpo": block, "lora": LORA}, "test")


def initial_adapter(lm: LoadedModel, p: FinetunePlan) -> dict[str, torch.Tensor]:
    model = attach_lora(lm, p.lora, init_seed=p.init_seed)
    try:
        return adapter_state(model)
    finally:
        detach_lora(lm, model)


def test_constant_rewards_leave_the_adapter_unchanged_and_are_counted(lm: LoadedModel, store: DataStore) -> None:
    # The store has no CVS labels: a CVS-only reward is absent for every completion, so every group is constant.
    p = plan(reward_weights={"cvs": 1.0}, beta=0.04, local_steps=1)
    result = grpo_round(lm, store, p, None, seed=1)
    start = initial_adapter(lm, p)
    assert all(torch.equal(result.state[k], start[k]) for k in start)
    assert result.grpo_stats is not None and result.grpo_stats["zero-spread-share"] == 1.0
    assert result.grpo_stats["frames"] == 2.0 and "reward-cvs" not in result.grpo_stats


def test_kl_is_zero_at_the_first_step(lm: LoadedModel, store: DataStore) -> None:
    result = grpo_round(lm, store, plan(local_steps=1, reward_weights={"phase": 1.0, "format": 0.5}), None, seed=2)
    assert result.grpo_stats is not None and result.grpo_stats["kl-mean"] == 0.0


@pytest.fixture(scope="module")
def rewarded(lm: LoadedModel, store: DataStore) -> tuple[dict[str, torch.Tensor], Any, dict[str, torch.Tensor]]:
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    p = plan(local_steps=3, reward_weights={"phase": 1.0, "format": 0.5, "grounding": 0.5})
    result = grpo_round(lm, store, p, None, seed=3)
    return before, result, initial_adapter(lm, p)


def test_rewards_move_lora_weights_and_never_base_weights(lm: LoadedModel, rewarded: Any) -> None:
    before, result, start = rewarded
    after = lm.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in k for k in after)  # the adapter is detached again
    moved = [k for k in start if not torch.equal(result.state[k], start[k])]
    assert moved and all("lora_" in k for k in result.state)
    stats = result.grpo_stats
    assert stats["zero-spread-share"] < 1.0 and 0.0 <= stats["reward-phase"] <= 1.0 and "reward-grounding" in stats
    assert stats["kl-mean"] > 0.0  # later steps drift from the reference, and the KL term sees it


def ctx(tmp_path: Path, rounds: int = 2) -> PrivacyContext:
    ledger = SiteLedger(tmp_path / "privacy-ledger.jsonl", AuditLog(tmp_path / "audit.jsonl"))
    return PrivacyContext(ledger, "study", rounds, 1, policy=SitePolicy(min_train_videos=3))


def test_dp_round_clips_per_video_and_reports_epsilon(lm: LoadedModel, store: DataStore, tmp_path: Path) -> None:
    p = parse_finetune(
        {**plan().to_dict(), "dp": {"target_epsilon": 8.0, "delta": 1e-3 / 3, "sample_rate": 0.67}}, "test"
    )
    privacy = ctx(tmp_path)
    result = grpo_round(lm, store, p, None, seed=4, privacy=privacy)
    assert result.epsilon is not None and 0 < result.epsilon <= 8.0 and result.privacy_unit == "video"
    assert len(privacy.ledger.rounds()) == 1
    assert result.steps == 2 and result.grpo_stats is not None


def test_round_past_the_budget_is_refused_before_sampling(lm: LoadedModel, store: DataStore, tmp_path: Path) -> None:
    p = parse_finetune(
        {**plan().to_dict(), "dp": {"target_epsilon": 0.5, "delta": 1e-4, "noise_multiplier": 0.3}}, "test"
    )
    privacy = ctx(tmp_path)
    frames: list[tuple[str, int, int]] = []
    with pytest.raises(PrivacyBudgetExceeded, match="refused before training"):
        grpo_round(lm, store, p, None, seed=5, privacy=privacy, progress=lambda *a: frames.append(a))
    assert frames == [] and privacy.ledger.rounds() == []
