"""GRPO reward statistics at the hub: stored with each trainer's train job, written as rewards.csv and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hub.report import _reward_rows
from hub.store import ResultsStore
from reports import Blinder
from reports.rewards import rewards_frame, write_rewards


def test_reward_statistics_round_trip_the_store_into_rewards_csv_and_plot(tmp_path: Path) -> None:
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    released = {
        ("north", 1): {"reward-mean": 0.2, "reward-phase": 0.1, "suppressed": 0},
        ("north", 2): {"reward-mean": 0.5, "reward-phase": 0.4, "suppressed": 0},
        ("south", 1): {"suppressed": 1},  # too few videos sampled: nothing but the flag
    }
    for (center, round_), values in released.items():
        store.set_job("L1", round_, center, kind="train", job_id=f"j{round_}{center}", state="stored",
                      rewards=json.dumps(values))  # fmt: skip
    store.set_job("L1", 1, "held", kind="evaluate", job_id="e", state="stored")
    frame = rewards_frame(_reward_rows(store.jobs("L1"), Blinder(["north", "south", "held"], enabled=True)))
    assert frame.to_dict("records") == [
        {"round": 1, "center": "Center A", "component": "reward-mean", "value": 0.2},
        {"round": 1, "center": "Center A", "component": "reward-phase", "value": 0.1},
        {"round": 2, "center": "Center A", "component": "reward-mean", "value": 0.5},
        {"round": 2, "center": "Center A", "component": "reward-phase", "value": 0.4},
    ]
    paths = write_rewards(frame, tmp_path / "report", "GRPO rewards")
    assert [p.name for p in paths] == ["rewards.csv", "rewards.png", "rewards.svg"]
    assert pd.read_csv(paths[0]).equals(frame)
    assert write_rewards(rewards_frame([]), tmp_path / "empty", "none") == []
