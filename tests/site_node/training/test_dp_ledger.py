"""DP-SGD with opacus on the tiny model (per-video sampling, noise-only steps) and the site-wide privacy ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from protocols.finetune import DpMode, DpPlan, FinetunePlan, LoraPlan, parse_finetune
from site_node.audit import AuditLog
from site_node.model.loading import LoadedModel
from site_node.policy import SitePolicy
from site_node.store import DataStore
from site_node.training import dp as dp_module
from site_node.training import lora as lora_module
from site_node.training.dp import DpSchedule, DpTrainer, PrivacyBudgetExceeded, dp_schedule, poisson_video_batches
from site_node.training.guard import PrivacyContext
from site_node.training.ledger import LedgerTampered, SiteLedger, study_epsilon, unit_epsilons
from site_node.training.lora import adapter_state, attach_lora, detach_lora, precheck_round, train_round

DP = {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}
SMALL_SITE = SitePolicy(min_train_videos=3)  # the training store has three videos


def ledger_at(tmp_path: Path) -> SiteLedger:
    return SiteLedger(tmp_path / "privacy-ledger.jsonl", AuditLog(tmp_path / "audit.jsonl"))


def context(ledger: SiteLedger, study: str = "study", rounds: int = 2, round_: int | None = None) -> PrivacyContext:
    return PrivacyContext(ledger, study, rounds, round_, policy=SMALL_SITE)


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


def test_ledger_composes_with_opacus_per_unit_and_persists(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with ledger.locked():
        ledger.append("study-1", 1, ["a", "b"], (1.1, 0.05, 40), 1e-5)
        ledger.append("study-1", 2, ["a", "b"], (0.9, 0.1, 25), 1e-5)
        ledger.append("other", None, ["b"], (5.0, 0.5, 1), 1e-5)
    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 40), (0.9, 0.1, 25)]
    rounds = ledger_at(tmp_path).rounds()  # a restarted engine reads the same spend
    assert study_epsilon(rounds, "study-1", 1e-5) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    assert study_epsilon(rounds, "never-trained", 1e-5) == 0.0
    per_unit = unit_epsilons(rounds, ["a", "b", "c"], 1e-5)
    assert per_unit["a"] == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    assert per_unit["b"] > per_unit["a"] and per_unit["c"] == 0.0  # b is in both studies: the site-wide view
    mirror = [e for e in AuditLog(tmp_path / "audit.jsonl").entries() if e["event"] == "privacy-ledger"]
    assert [e["ledger_seq"] for e in mirror] == [1, 2, 3]


def test_non_dp_round_makes_its_units_unbounded(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with ledger.locked():
        ledger.append("plain", 1, ["a"], None, None)
    per_unit = unit_epsilons(ledger.rounds(), ["a", "b"], 1e-5, (1.0, 0.5, 10))
    assert per_unit["a"] == float("inf") and 0 < per_unit["b"] < float("inf")


@pytest.mark.parametrize("attack", ["edit", "delete", "truncate", "garbage"])
def test_edited_or_missing_ledger_stops_training(lm: LoadedModel, store: DataStore, tmp_path: Path,
                                                 attack: str) -> None:  # fmt: skip
    ledger = ledger_at(tmp_path)
    with ledger.locked():
        ledger.append("study", 1, ["x"], (0.5, 0.5, 100), 1e-5)
        ledger.append("study", 2, ["x"], (0.5, 0.5, 100), 1e-5)
    lines = ledger.path.read_text().splitlines()
    if attack == "edit":  # lower the recorded spend
        ledger.path.write_text("\n".join([lines[0].replace('"steps": 100', '"steps": 1'), lines[1]]) + "\n")
    elif attack == "delete":
        ledger.path.unlink()
    elif attack == "truncate":
        ledger.path.write_text(lines[0] + "\n")
    else:
        ledger.path.write_text("{not json")
    calls: list[tuple] = []
    with pytest.raises(LedgerTampered):
        train_round(lm, store, dp_plan("hooks", noise=1.0), None, seed=0, progress=lambda *a: calls.append(a),
                    privacy=context(ledger))  # fmt: skip
    assert calls == []


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
    ledger = ledger_at(tmp_path)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    result = train_round(lm, store, dp_plan("ghost"), None, seed=0, privacy=context(ledger, round_=1))
    assert result.privacy_unit == "video" and result.delta == 1e-5
    assert result.empty_steps >= 1 and result.steps == 4 and np.isfinite(result.loss)
    assert result.sample_rate == pytest.approx(1 / 3)
    assert result.epsilon == pytest.approx(study_epsilon(ledger.rounds(), "study", 1e-5)) and 0 < result.epsilon <= 8.0
    entry = json.loads(ledger.path.read_text().splitlines()[0])
    assert entry["dp"]["steps"] == 4 and len(entry["units"]) == 3
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    metrics = result.reply_metrics()
    assert "loss" not in metrics  # computed on private frames without noise: it stays at the site
    assert metrics["privacy-unit"] == "video" and metrics["epsilon"] == result.epsilon


def test_round_past_the_budget_is_refused_before_training(lm: LoadedModel, store: DataStore, tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with ledger.locked():
        ledger.append("study", 1, ["x"], (0.5, 0.5, 100), 1e-5)  # already far past epsilon 8
    snapshot = ledger.path.read_text()
    calls: list[tuple] = []
    with pytest.raises(PrivacyBudgetExceeded, match="past the site's budget of 8"):
        precheck_round(store, dp_plan("hooks", noise=1.0), context(ledger))
    with pytest.raises(PrivacyBudgetExceeded, match="past the site's budget of 8"):
        train_round(
            lm,
            store,
            dp_plan("hooks", noise=1.0),
            None,
            seed=0,
            progress=lambda *a: calls.append(a),
            privacy=context(ledger),
        )
    assert calls == []  # not a frame decoded, not a step taken
    assert ledger.path.read_text() == snapshot  # nothing recorded for a refused round
    assert not any("lora" in n for n, _ in lm.model.named_modules())
