"""Federated LoRA fine-tuning over the shared federation: held-out gains, stored adapters, DP accounting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.demo.study import SITES, TRAINERS
from hub.launcher import launch
from protocols.adapters import adapter_sha256
from site_node.approvals import approve
from site_node.audit import AuditLog
from site_node.home import SiteHome

pytestmark = pytest.mark.integration
DP_CAPPED = SITES[2].name  # its site.toml caps its epsilon far below the study target (see conftest)


def _approve_all(federation, protocol: Path, sites: list[str]) -> None:  # type: ignore[no-untyped-def]
    for name in sites:
        approve(SiteHome(federation.run / "sites" / name).approved_dir, protocol)


@pytest.fixture(scope="module")
def finetune(federation):  # type: ignore[no-untyped-def]
    names = [s.name for s in federation.sites]
    protocol = federation.protocol("itest-finetune", names, template="demo-finetune.yaml.tmpl", trainers=TRAINERS)
    _approve_all(federation, protocol, names)
    return protocol, launch(federation.hub, protocol, echo=lambda _: None)


# Runs first (file order): the demo's main study trains without DP (its sites' policy says so), which makes
# those videos' epsilon unbounded in the site-wide ledger; a DP study after it would rightly be refused.
def test_dp_round_reports_epsilon_and_capped_site_refuses(federation) -> None:  # type: ignore[no-untyped-def]
    trainers = tuple(TRAINERS)
    protocol = federation.protocol(
        "itest-dp",
        list(trainers),
        template="demo-finetune.yaml.tmpl",
        trainers=trainers,
        replace={
            "rounds: 3": "rounds: 1",
            # What this test checks (the accountant's epsilon, the capped site's refusal) needs few steps and frames.
            "local_steps: 60": "local_steps: 8",
            "sample_every_s: 1.0": "sample_every_s: 4.0",
            "    wire_dtype: bf16": "    wire_dtype: bf16\n"
            "    dp: {target_epsilon: 50.0, delta: 1.0e-5, max_grad_norm: 1.0}",
        },
    )
    _approve_all(federation, protocol, list(trainers))
    launch_id = launch(federation.hub, protocol, echo=lambda _: None)
    jobs = {j["center"]: j for j in federation.hub.store().jobs(launch_id) if j["kind"] == "train"}
    capped = jobs[DP_CAPPED]
    assert capped["state"] == "refused" and "budget" in capped["detail"].lower()
    other = jobs[next(t for t in trainers if t != DP_CAPPED)]
    assert other["state"] == "stored" and 0 < other["epsilon"] <= 50.0
    # The operator's log keeps the job's events, not opacus' line per LoRA module.
    log = (federation.run / "sites" / other["center"] / "logs" / "engine.log").read_text()
    assert "job finished: train round 1 of study itest-dp" in log and "Ghost Clipping" not in log


# The demo's recipe (`make demo-finetune`), all three rounds. Held-out phase accuracy measured with it on the 2-core
# development machine: 0.439 -> 0.501 -> 0.537 -> 0.554, a gain of 0.115. Training seeds are the sites' own
# randomness, so the gain varies from run to run: two rounds gave +0.115 once and +0.044 in the next clean-clone
# run, too close to the bound. Asserting about half of the three-round gain leaves room for that and for other
# CPUs' float rounding.
ROUNDS = 3  # the template's
HELD_OUT_MIN_GAIN = 0.06


def test_every_round_is_evaluated_at_every_center(federation, finetune) -> None:  # type: ignore[no-untyped-def]
    frame = federation.hub.store().results_frame(finetune[1])
    acc = frame[frame.metric == "accuracy"]
    assert sorted(acc["round"].unique()) == list(range(ROUNDS + 1))
    assert (acc.groupby("round")["center"].nunique() == 3).all()
    roles = frame.drop_duplicates("center").set_index("center")["role"].to_dict()
    assert {c for c, r in roles.items() if r == "train"} == set(TRAINERS)
    assert [c for c, r in roles.items() if r == "held_out"] == [c for c in roles if c not in TRAINERS]


def test_held_out_center_gains_from_federated_fine_tuning(federation, finetune) -> None:  # type: ignore[no-untyped-def]
    frame = federation.hub.store().results_frame(finetune[1])
    held = frame[(frame.metric == "accuracy") & (frame.role == "held_out")].set_index("round")
    first, last = held.loc[0], held.loc[held.index.max()]
    assert last.estimate - first.estimate >= HELD_OUT_MIN_GAIN, held[["estimate", "ci_low", "ci_high"]]
    assert last.ci_low < last.estimate < last.ci_high and first.ci_high > first.estimate


def test_adapters_stored_exported_and_reproduced(federation, finetune, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = federation.hub
    stored = hub.store().adapters(finetune[1])
    assert [a["round"] for a in stored] == list(range(1, ROUNDS + 1))
    out = tmp_path / "adapter"
    cmd = [
        sys.executable,
        "-m",
        "hub.cli",
        "adapters",
        "export",
        "--study",
        "itest-finetune",
        "--round",
        str(ROUNDS),
        "--out",
        str(out),
        "--home",
        str(hub.root),
    ]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    assert adapter_sha256(out) == stored[-1]["sha256"]

    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(federation.model_dir, local_files_only=True)
    assert isinstance(PeftModel.from_pretrained(base, str(out)), PeftModel)

    held_out = next(s.name for s in federation.sites if s.name not in TRAINERS)
    results = tmp_path / "local"
    cmd = [
        sys.executable,
        "-m",
        "site_node.cli",
        "evaluate",
        "--protocol",
        str(finetune[0]),
        "--data",
        str(federation.run / "sites" / held_out),
        "--model",
        str(federation.model_dir),
        "--adapter",
        str(out),
        "--out",
        str(results),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    local = json.loads((results / "metrics.json").read_text())
    frame = hub.store().results_frame(finetune[1])
    hub_acc = frame[(frame.center == held_out) & (frame["round"] == ROUNDS) & (frame.metric == "accuracy")].iloc[0]
    local_acc = local["tasks"]["phase"]["metrics"]["accuracy"]
    assert local_acc["estimate"] == pytest.approx(hub_acc.estimate, abs=1e-12)
    assert local_acc["ci_low"] == pytest.approx(hub_acc.ci_low, abs=1e-12)


def test_train_payload_is_the_adapter_size(federation, finetune) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    stored = federation.hub.store().adapters(finetune[1])[-1]
    with safe_open(str(Path(stored["path"]) / "adapter_model.safetensors"), "pt") as fh:
        n_values = sum(fh.get_tensor(k).numel() for k in fh.keys())
    bf16_bytes = 2 * n_values
    for site in TRAINERS:
        log = AuditLog(federation.run / "sites" / site / "audit" / "audit.jsonl")
        sizes = [
            e["summary"]["adapter_values"]
            for e in log.entries()
            if e["event"] == "released" and "adapter_values" in e.get("summary", {})
        ]
        assert sizes and all(abs(s - bf16_bytes) <= 0.05 * bf16_bytes for s in sizes), (sizes, bf16_bytes)
