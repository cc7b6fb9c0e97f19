"""Two model copies in two processes (devices = ["cpu", "cpu"]) give one device's results, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.errors import ConfigError, EngineError
from protocols.study import TaskPlan
from site_node.evaluation import evaluate_task
from site_node.local_eval import open_data
from site_node.model.devices import DevicePool
from site_node.model.loading import load_model


def test_two_devices_equal_one(tiny_model_dir: Path, synthetic_site: Path, tmp_path: Path) -> None:
    lm = load_model(tiny_model_dir, device="cpu")
    store = open_data(synthetic_site).store
    plan = TaskPlan("cvs", 1.0, 16)  # scored: generation and candidate scoring both run on the copies
    kw = {"batch_size": 4, "seed": 5, "replicates": 100}
    one = evaluate_task(lm, store, plan, predictions=tmp_path / "one.jsonl", **kw)
    with DevicePool(tiny_model_dir, ["cpu", "cpu"]) as pool:
        two = evaluate_task(lm, store, plan, predictions=tmp_path / "two.jsonl", runner=pool, **kw)
    lines = (tmp_path / "one.jsonl").read_text().splitlines()
    assert len(lines) > 2 * kw["batch_size"]  # more batches than devices: both copies worked
    assert (tmp_path / "two.jsonl").read_text().splitlines() == lines
    assert one.score is not None and two.score is not None and one.score.to_json() == two.score.to_json()


def test_no_device_and_a_device_that_does_not_exist(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="at least one device"):
        DevicePool(tiny_model_dir, [])
    with pytest.raises(EngineError, match="tpu:0"):
        DevicePool(tiny_model_dir, ["tpu:0"])
