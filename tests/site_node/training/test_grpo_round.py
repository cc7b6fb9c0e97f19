"""GRPO rounds on the tiny model: constant rewards change nothing, rewards move LoRA only, DP per video, budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import LogitsProcessor, LogitsProcessorList

from protocols.contract import GRPO_STAT_KEYS
from protocols.finetune import FinetunePlan, parse_finetune
from protocols.study import StudyProtocol, loads_protocol
from site_node.audit import AuditLog
from site_node.finetune_jobs import check_train, run_train
from site_node.model.generate import chat_text, encode_batch
from site_node.model.loading import LoadedModel
from site_node.policy import SitePolicy
from site_node.store import DataStore
from site_node.training.dp import PrivacyBudgetExceeded
from site_node.training.examples import build_training_set, load_frames
from site_node.training.grpo import GrpoStats, StepReward, sampling_config, vision_token_ids
from site_node.training.grpo_round import grpo_round
from site_node.training.guard import PrivacyContext
from site_node.training.ledger import SiteLedger, study_epsilon
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


class _Favour(LogitsProcessor):
    """Makes the given tokens by far the likeliest (what an undertrained model may do at temperature 1)."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.tokens] += 100.0
        return scores


def test_sampling_never_draws_a_vision_placeholder(lm: LoadedModel, store: DataStore) -> None:
    """A sampled image token would break the loss's re-read of the completion with its frame (a demo round
    crashed on it: 'Image features and image tokens do not match')."""
    tokens = vision_token_ids(lm.model)
    assert len(tokens) == 4
    ts = build_training_set(store, 1.0)
    image = load_frames(store, ts, {0})[0]
    enc = encode_batch(lm, [image, image], chat_text(lm.processor, "Which phase?"))
    config = sampling_config(lm.model, plan().grpo)  # type: ignore[arg-type]
    config.max_new_tokens = 6
    favour = LogitsProcessorList([_Favour(tokens)])
    drawn = lm.model.generate(**enc, generation_config=config, logits_processor=favour)[:, enc["input_ids"].shape[1] :]
    assert drawn.numel() > 0 and not torch.isin(drawn, torch.tensor(tokens)).any()
    config.suppress_tokens = None  # the control: unsuppressed, the favoured placeholders are drawn
    drawn = lm.model.generate(**enc, generation_config=config, logits_processor=favour)[:, enc["input_ids"].shape[1] :]
    assert torch.isin(drawn[:, 0], torch.tensor(tokens)).all()


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


def _steps(*rewards: tuple[float, str]) -> GrpoStats:
    stats = GrpoStats()
    stats.steps = [StepReward(r * 4, 4, frozenset(v)) for r, v in rewards]
    return stats


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (GrpoStats(), {}),
        (
            _steps((0.5, "ab")),
            {"reward-first": 0.5, "reward-first-videos": 2, "reward-last": 0.5, "reward-last-videos": 2},
        ),  # fmt: skip
        # 5 steps: windows of ceil(5 / 4) = 2 steps, the first from the incoming adapter, the last ending the round
        (
            _steps((0.2, "a"), (0.4, "ab"), (0.9, "c"), (0.6, "cd"), (1.0, "e")),
            {"reward-first": 0.3, "reward-first-videos": 2, "reward-last": 0.8, "reward-last-videos": 3},
        ),  # fmt: skip
    ],
)
def test_first_and_last_windows_average_their_steps(stats: GrpoStats, expected: dict[str, float]) -> None:
    assert stats.window_means() == pytest.approx(expected)


def test_a_rounds_steps_are_recorded_with_their_videos(rewarded: Any) -> None:
    stats = rewarded[1].grpo_stats
    assert stats["reward-first"] >= 0.0 and stats["reward-last"] >= 0.0
    assert 1 <= stats["reward-first-videos"] <= 2 and stats["reward-first-videos"] <= stats["videos"]


Widen = Callable[[DataStore, Path, int], DataStore]  # the conftest's `widened`


def dp_protocol(**dp: Any) -> StudyProtocol:
    """A GRPO study under DP, as a site approves it (the job runner reads the plan and the cell floor from it)."""
    finetune = {**plan().to_dict(), "trainers": ["t"], "dp": dp}
    return loads_protocol(
        yaml.safe_dump(
            {
                "study": {"id": "grpo-dp", "version": "1"},
                "sites": ["t"],
                "model": {"manifest_sha256": "0" * 64},
                "tasks": ["phase"],
                "round_plan": {"mode": "finetune", "rounds": 2, "finetune": finetune},
                "privacy": {"min_videos": 5},
            }
        ),
        "test",
    )


@pytest.fixture(scope="module")
def ten_videos(store: DataStore, tmp_path_factory: pytest.TempPathFactory, widened: Widen) -> DataStore:
    """Ten distinct videos: what the default site policy asks of a trainer."""
    return widened(store, tmp_path_factory.mktemp("ten"), 10)


def default_policy_context(tmp_path: Path, protocol: StudyProtocol) -> PrivacyContext:
    """The site-side context of a train job on a new site home: the default policy (DP required, ten videos,
    epsilon cap 10) and the site-wide ledger."""
    ledger = SiteLedger(tmp_path / "privacy-ledger.jsonl", AuditLog(tmp_path / "audit.jsonl"))
    return PrivacyContext(ledger, protocol.study_id, protocol.round_plan.rounds, 1, policy=SitePolicy())


def test_dp_round_under_the_default_policy_reports_epsilon(lm: LoadedModel, ten_videos: DataStore,
                                                           tmp_path: Path) -> None:  # fmt: skip
    protocol = dp_protocol(target_epsilon=8.0, delta=1e-3, sample_rate=0.2)
    privacy = default_policy_context(tmp_path, protocol)
    check_train(protocol, "t", ten_videos, privacy)  # what the engine runs when the job is submitted
    records = run_train(lm, ten_videos, protocol, "job-1", tmp_path, privacy, lambda *a: None)
    epsilon = records["train"]["values"]["epsilon"]
    assert 0 < epsilon <= 8.0 and epsilon == pytest.approx(study_epsilon(privacy.ledger.rounds(), "grpo-dp", 1e-3))
    assert [(r.round, len(r.units), r.private) for r in privacy.ledger.rounds()] == [(1, 10, True)]
    assert "adapter" in records and records["grpo"]["values"].keys() <= {*GRPO_STAT_KEYS, "suppressed"}


def test_round_past_the_budget_is_refused_before_sampling(lm: LoadedModel, ten_videos: DataStore,
                                                          tmp_path: Path) -> None:  # fmt: skip
    protocol = dp_protocol(target_epsilon=0.5, delta=1e-4, noise_multiplier=0.3)
    privacy = default_policy_context(tmp_path, protocol)
    with pytest.raises(PrivacyBudgetExceeded, match="refused before training"):
        check_train(protocol, "t", ten_videos, privacy)
    progress: list[tuple[str, int, int]] = []
    with pytest.raises(PrivacyBudgetExceeded, match="refused before training"):
        run_train(lm, ten_videos, protocol, "job-2", tmp_path, privacy, lambda *a: progress.append(a))
    assert progress == [] and privacy.ledger.rounds() == []  # no frame read, nothing sampled, nothing recorded
