"""DP-SGD with opacus on the tiny model (per-video sampling, noise-only steps) and the privacy ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from protocols.finetune import DpMode, DpPlan, FinetunePlan, LoraPlan, parse_finetune
from site_node.model.loading import LoadedModel
from site_node.store import DataStore
from site_node.training import dp as dp_module
from site_node.training import lora as lora_module
from site_node.training.dp import (
    DpSchedule,
    DpTrainer,
    PrivacyBudgetExceeded,
    PrivacyLedger,
    dp_schedule,
    poisson_video_batches,
)
from site_node.training.lora import PrivacyContext, adapter_state, attach_lora, detach_lora, precheck_round, train_round

DP = {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}


def dp_plan(mode: str = "ghost", steps: int = 4, noise: float | None = None) -> FinetunePlan:
    return parse_finetune(
        {
            "trainers": ["trainer"],
            "local_steps": steps,
            "batch_size": 1,
            "lr": 0.01,
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
            "dp": {**DP, "mode": mode, "noise_multiplier": noise},
        },
        "test",
    )


def test_ledger_composes_with_opacus_and_persists(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    rounds = [DpSchedule(1.1, 0.05, 40, 20), DpSchedule(0.9, 0.1, 25, 10)]
    for i, s in enumerate(rounds):
        ledger.record("study-1", s, round=i + 1)
    ledger.record("other", DpSchedule(5.0, 0.5, 1, 2))
    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 40), (0.9, 0.1, 25)]
    again = PrivacyLedger(tmp_path / "privacy.json")  # a restarted engine reads the same spend
    assert again.epsilon("study-1", 1e-5) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    assert [e.round for e in again.entries("study-1")] == [1, 2] and len(again.entries("other")) == 1
    assert again.epsilon("never-trained", 1e-5) == 0.0
    nxt = DpSchedule(1.0, 0.1, 10, 10)
    assert again.projected_epsilon("study-1", 1e-5, nxt) > again.epsilon("study-1", 1e-5)


def test_budget_check_refuses_with_the_numbers(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    ledger.record("s", DpSchedule(0.8, 0.2, 50, 10))
    spent = ledger.epsilon("s", 1e-5)
    with pytest.raises(
        PrivacyBudgetExceeded,
        match=rf"study s: .* from {spent:.3f} to .* past the site's budget of "
        rf"{spent + 0.01:g}; refused before training",
    ):
        ledger.check_budget("s", spent + 0.01, 1e-5, DpSchedule(0.8, 0.2, 50, 10))
    assert ledger.check_budget("s", 1000.0, 1e-5, DpSchedule(0.8, 0.2, 50, 10)) > spent


def test_unreadable_ledger_refuses(tmp_path: Path) -> None:
    path = tmp_path / "privacy.json"
    path.write_text("{not json")
    with pytest.raises(PrivacyBudgetExceeded, match="unreadable"):
        PrivacyLedger(path).epsilon("s", 1e-5)


def test_computed_noise_keeps_all_planned_rounds_within_target() -> None:
    plan = DpPlan(target_epsilon=4.0, delta=1e-5)
    s = dp_schedule(plan, n_videos=40, batch_size=4, local_steps=None, epochs=2.0, total_rounds=3)
    assert s.sample_rate == pytest.approx(0.1) and s.steps == 20  # an epoch is 1/q Poisson steps
    spent = dp_module.rdp_epsilon([(s.noise_multiplier, s.sample_rate, s.steps)] * 3, 1e-5)
    assert 3.8 < spent <= 4.0


def test_poisson_batches_take_at_most_one_frame_per_video() -> None:
    by_video = {"v1": [0, 1, 2], "v2": [3, 4], "v3": [5]}
    owner = {i: v for v, idx in by_video.items() for i in idx}
    batches = poisson_video_batches(by_video, 0.4, 200, np.random.default_rng(0))
    assert all(len({owner[i] for i in b}) == len(b) for b in batches)
    assert any(not b for b in batches) and any(len(b) == 3 for b in batches)
    assert abs(np.mean([len(b) for b in batches]) - 1.2) < 0.25  # 3 videos x 0.4


@pytest.mark.parametrize("mode", [DpMode.GHOST, DpMode.HOOKS])
def test_empty_poisson_batch_takes_a_noise_only_step(lm: LoadedModel, mode: DpMode) -> None:
    model = attach_lora(lm, LoraPlan(rank=4), init_seed=1)
    try:
        before = adapter_state(model)
        params = [p for p in model.parameters() if p.requires_grad]
        plan = DpPlan(target_epsilon=8, delta=1e-5, noise_multiplier=1.0, mode=mode)
        trainer = DpTrainer(model, torch.optim.SGD(params, lr=0.1), plan, DpSchedule(1.0, 0.5, 1, 2))
        trainer.noise_step()  # no forward pass at all
        trainer.close()
        after = adapter_state(model)
        moved = [k for k in before if not torch.equal(before[k], after[k])]
        assert len(moved) == len(before)  # every LoRA tensor received noise
        assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # opacus cleaned up
    finally:
        detach_lora(lm, model)


def _seed_with_an_empty_step(n_videos: int, steps: int) -> int:
    """A seed whose Poisson draws give at least one empty and one non-empty batch at rate 1/n_videos."""
    by_video = {f"v{i}": [i] for i in range(n_videos)}
    for seed in range(1000):
        b = poisson_video_batches(by_video, 1 / n_videos, steps, np.random.default_rng(seed))
        if any(not x for x in b) and any(x for x in b):
            return seed
    raise AssertionError("no seed found")


def test_dp_round_reports_epsilon_per_video(
    lm: LoadedModel, store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = _seed_with_an_empty_step(3, 4)
    monkeypatch.setattr(lora_module, "private_rng", lambda: np.random.default_rng(seed))
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    result = train_round(lm, store, dp_plan("ghost"), None, seed=0, privacy=PrivacyContext(ledger, "study", 2, 1))
    assert result.privacy_unit == "video" and result.delta == 1e-5
    assert result.empty_steps >= 1 and result.steps == 4 and np.isfinite(result.loss)
    assert result.sample_rate == pytest.approx(1 / 3)
    assert result.epsilon == pytest.approx(ledger.epsilon("study", 1e-5)) and 0 < result.epsilon <= 8.0
    assert json.loads((tmp_path / "privacy.json").read_text())["studies"]["study"][0]["steps"] == 4
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    metrics = result.reply_metrics()
    assert "loss" not in metrics  # computed on private frames without noise: it stays at the site
    assert metrics["privacy-unit"] == "video" and metrics["epsilon"] == result.epsilon


def test_round_past_the_budget_is_refused_before_training(lm: LoadedModel, store: DataStore, tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    ledger.record("study", DpSchedule(0.5, 0.5, 100, 3))  # already far past epsilon 8
    snapshot = (tmp_path / "privacy.json").read_text()
    calls: list[tuple] = []
    with pytest.raises(PrivacyBudgetExceeded, match="past the site's budget of 8"):
        precheck_round(store, dp_plan("hooks", noise=1.0), PrivacyContext(ledger, "study", 2))
    with pytest.raises(PrivacyBudgetExceeded, match="past the site's budget of 8"):
        train_round(
            lm,
            store,
            dp_plan("hooks", noise=1.0),
            None,
            seed=0,
            progress=lambda *a: calls.append(a),
            privacy=PrivacyContext(ledger, "study", 2),
        )
    assert calls == []  # not a frame decoded, not a step taken
    assert (tmp_path / "privacy.json").read_text() == snapshot  # nothing recorded for a refused round
    assert not any("lora" in n for n, _ in lm.model.named_modules())
