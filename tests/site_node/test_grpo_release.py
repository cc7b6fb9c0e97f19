"""GRPO reward statistics at the release gate: aggregates only, small cells suppressed, nothing per frame."""

from __future__ import annotations

import pytest

from protocols.contract import JobState, Op, check_records
from protocols.errors import ContractError
from protocols.records import job_reply
from site_node.release_gate import grpo_record

STATS = {
    "reward-mean": 0.4,
    "reward-phase": 0.3,
    "reward-format": 0.9,
    "zero-spread-share": 0.25,
    "kl-mean": 0.01,
    "clip-fraction": 0.0,
    "reward-first": 0.35,
    "reward-last": 0.5,
    "frames": 80.0,  # local bookkeeping: never released
    "videos": 6.0,
    "reward-first-videos": 5.0,
    "reward-last-videos": 6.0,
}
HOME_ONLY = ("frames", "videos", "reward-first-videos", "reward-last-videos")


@pytest.mark.parametrize(
    ("videos", "floor", "expected"),
    [
        (6, 5, {k: v for k, v in STATS.items() if k not in HOME_ONLY} | {"suppressed": 0}),
        (6, 6, {k: v for k, v in STATS.items() if k not in (*HOME_ONLY, "reward-first")} | {"suppressed": 0}),
        (4, 5, {"suppressed": 1}),
        (0, 1, {"suppressed": 1}),
    ],
)
def test_small_cells_are_suppressed_and_counts_stay_home(videos: int, floor: int, expected: dict) -> None:
    records = grpo_record(STATS, videos, floor)
    assert records["grpo"]["values"] == expected
    check_records(Op.FETCH, {**job_reply("j", JobState.DONE), **records})


@pytest.mark.parametrize(
    ("key", "value"),
    [("completion", 1.0), ("reward-frame-3", 1.0), ("videos", 6), ("answer", 0.0), ("reward-first-videos", 5.0)],
)
def test_the_contract_refuses_anything_but_the_aggregates(key: str, value: object) -> None:
    records = grpo_record(STATS, 6, 5)
    records["grpo"]["values"][key] = value
    with pytest.raises(ContractError, match=key):
        check_records(Op.FETCH, records)


def test_non_finite_statistics_are_left_out() -> None:
    values = grpo_record({"reward-mean": float("nan"), "kl-mean": 0.5}, 9, 5)["grpo"]["values"]
    assert values == {"kl-mean": 0.5, "suppressed": 0}
