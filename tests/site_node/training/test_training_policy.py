"""The site policy for training replayed as attacks: too few videos, no DP, a large delta, duplicates, caps."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from protocols.finetune import FinetunePlan, parse_finetune
from protocols.study import load_protocol
from site_node.approvals import approve
from site_node.audit import AuditLog
from site_node.engine import SiteEngine
from site_node.finetune_jobs import fedavg_weight, privacy_context
from site_node.home import SiteHome, init_home
from site_node.ingest import ingest
from site_node.policy import PolicyRefused, SitePolicy
from site_node.store import DataStore
from site_node.synthetic.videos import synthesize_site
from site_node.training.dp import PrivacyBudgetExceeded
from site_node.training.examples import build_training_set
from site_node.training.guard import PrivacyContext, check_round, reserve_round
from site_node.training.ledger import SiteLedger, study_epsilon
from site_node.training.lora import TrainResult

Widen = Callable[[DataStore, Path, int], DataStore]  # the conftest's `widened`
DEFAULT = SitePolicy()
DP = {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0, "noise_multiplier": 2.0}


def plan(dp: dict | None = DP, steps: int = 4) -> FinetunePlan:
    data = {"trainers": ["a"], "local_steps": steps, "batch_size": 2, "lora": {"rank": 4}}
    return parse_finetune({**data, "dp": dp}, "test")


def ctx(tmp_path: Path, policy: SitePolicy = DEFAULT, study: str = "s") -> PrivacyContext:
    return PrivacyContext(SiteLedger(tmp_path / "ledger.jsonl", AuditLog(tmp_path / "audit.jsonl")), study, 2, 1,
                          policy=policy)  # fmt: skip


def test_nine_videos_are_refused_under_the_default_policy(store: DataStore, tmp_path: Path, widened: Widen) -> None:
    nine = widened(store, tmp_path / "nine", 9)
    units = build_training_set(nine, 1.0).units()
    assert len(units) == 9
    with pytest.raises(PolicyRefused, match="9 distinct videos .* min_train_videos = 10"):
        check_round(plan(), ctx(tmp_path), units)
    ten = build_training_set(widened(store, tmp_path / "ten", 10), 1.0).units()
    assert check_round(plan(), ctx(tmp_path), ten) is not None


def test_training_without_dp_is_refused_unless_the_policy_allows_it(store: DataStore, tmp_path: Path) -> None:
    units = build_training_set(store, 1.0).units()
    with pytest.raises(PolicyRefused, match="without differential privacy"):
        reserve_round(plan(None), ctx(tmp_path, SitePolicy(min_train_videos=3)), units)
    assert not (tmp_path / "ledger.jsonl").exists()
    allowed = ctx(tmp_path, SitePolicy(min_train_videos=3, require_dp=False), "plain")
    assert reserve_round(plan(None), allowed, units) is None  # recorded as unbounded for these videos
    with pytest.raises(PrivacyBudgetExceeded, match="unbounded"):  # a later DP study cannot claim a finite epsilon
        check_round(plan(), ctx(tmp_path, SitePolicy(min_train_videos=3), "dp-study"), units)


def test_delta_above_one_over_ten_n_is_refused(store: DataStore, tmp_path: Path, widened: Widen) -> None:
    units = build_training_set(widened(store, tmp_path / "wide", 12), 1.0).units()
    with pytest.raises(PolicyRefused, match=r"delta 0.009 is above 1/\(10 n\)"):
        check_round(plan({**DP, "delta": 0.009}), ctx(tmp_path), units)
    assert check_round(plan({**DP, "delta": 0.008}), ctx(tmp_path), units) is not None


def test_site_wide_cap_spans_studies(store: DataStore, tmp_path: Path) -> None:
    units = build_training_set(store, 1.0).units()
    first = ctx(tmp_path, SitePolicy(min_train_videos=3), "first")
    reserve_round(plan(), first, units)
    spent = study_epsilon(first.ledger.rounds(), "first", DP["delta"])
    policy = SitePolicy(min_train_videos=3, epsilon_cap=round(1.2 * spent, 3))  # less than a second round
    with pytest.raises(PrivacyBudgetExceeded, match="site-wide cap"):
        reserve_round(plan(), ctx(tmp_path, policy, "second"), units)  # its own study budget (8) is untouched
    assert check_round(plan(), ctx(tmp_path / "elsewhere", policy, "second"), units) is not None


def test_fixed_sample_rate_does_not_depend_on_the_number_of_videos(
    store: DataStore, tmp_path: Path, widened: Widen
) -> None:
    fixed = {**DP, "noise_multiplier": None, "sample_rate": 0.25}
    few = check_round(plan(fixed), ctx(tmp_path), build_training_set(widened(store, tmp_path / "a", 10), 1.0).units())
    many = check_round(plan(fixed), ctx(tmp_path), build_training_set(widened(store, tmp_path / "b", 40), 1.0).units())
    assert few is not None and many is not None
    assert (few.noise_multiplier, few.sample_rate, few.steps) == (many.noise_multiplier, many.sample_rate, many.steps)


def test_fedavg_weight_is_public_under_dp_and_coarse_without() -> None:
    result = TrainResult(state={}, num_examples=1234, steps=4, loss=0.0)
    assert fedavg_weight(plan(), result) == 2 * 4  # batch size x steps from the protocol, whatever the data
    assert fedavg_weight(plan(None), result) == 1024
    assert fedavg_weight(plan(None), TrainResult(state={}, num_examples=1300, steps=4, loss=0.0)) == 1024


def test_a_surgery_ingested_twice_counts_once(tmp_path: Path) -> None:
    synthesize_site(tmp_path / "raw", "a", 2, 1.0, 5, seconds=3.0)
    shutil.copytree(tmp_path / "raw", tmp_path / "copy")  # the same surgeries under another folder
    home = init_home(tmp_path / "site", "a")
    ingest(home, tmp_path / "raw", "cholec80", out_of_body="none", profile="demo")
    ingest(home, tmp_path / "copy", "cholec80", out_of_body="none", profile="demo")
    store = DataStore(home.store_dir)
    assert sum(len(d.videos) for d in store.datasets()) == 4
    ts = build_training_set(store, 1.0)
    assert len(ts.units()) == 2 and len(ts.videos) == 2 and len(ts.skipped) == 2
    assert len({v.case_key for d in store.datasets() for v in d.videos}) == 2


def _finetune_protocol(tmp_path: Path, dp: dict | None) -> Path:
    finetune = {"trainers": ["a"], "local_steps": 2, "batch_size": 2, **({"dp": dp} if dp else {})}
    data = {
        "study": {"id": "ft", "version": "1"},
        "sites": ["a"],
        "model": {"manifest_sha256": "0" * 64},
        "tasks": ["phase"],
        "round_plan": {"mode": "finetune", "rounds": 1, "finetune": finetune},
        "privacy": {"min_videos": 5},
    }
    path = tmp_path / f"ft-{bool(dp)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("dp", [None, DP], ids=["no-dp", "nine-videos"])
def test_engine_refuses_the_train_job_before_training(
    store: DataStore, tmp_path: Path, dp: dict | None, widened: Widen
) -> None:
    home = init_home(tmp_path / "site", "a")
    widened(store, home.store_dir, 9)
    engine = SiteEngine(home, load=False)
    path = _finetune_protocol(tmp_path, dp)
    approve(home.approved_dir, path)
    values = {
        "job-id": "t1",
        "kind": "train",
        "study": "ft",
        "round": 1,
        "protocol-hash": load_protocol(path).content_hash,
    }
    reply = engine.handle(
        {"token": home.token(), "op": "submit", "records": {"job": {"kind": "config", "values": values}}}
    )
    assert reply["ok"] and reply["records"]["job"]["values"]["state"] == "refused"
    assert not (home.root / "privacy-ledger.jsonl").exists()  # nothing reserved, nothing trained
    context = privacy_context(SiteHome(home.root), home.config(), load_protocol(path), 1, engine.audit)
    assert context.policy == SitePolicy()  # the default policy of a new site home


def test_concurrent_jobs_cannot_both_pass_a_check_only_one_fits(store: DataStore, tmp_path: Path) -> None:
    """Two engines (or jobs) on one site home: the check and the record are one step under the file lock."""
    import threading

    units = build_training_set(store, 1.0).units()
    probe = ctx(tmp_path / "probe", SitePolicy(min_train_videos=3), "probe")
    reserve_round(plan(), probe, units)
    one_round = study_epsilon(probe.ledger.rounds(), "probe", DP["delta"])
    policy = SitePolicy(min_train_videos=3, epsilon_cap=round(1.2 * one_round, 3))  # room for one round only
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def job(study: str) -> None:
        # each thread its own ledger object (as two processes would have), one file and one lock between them
        mine = PrivacyContext(SiteLedger(tmp_path / "ledger.jsonl", AuditLog(tmp_path / "audit.jsonl")), study, 2, 1,
                              policy=policy)  # fmt: skip
        barrier.wait()
        try:
            reserve_round(plan(), mine, units)
            outcomes.append("trained")
        except PrivacyBudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=job, args=(f"study-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "trained"]
