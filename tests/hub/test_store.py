"""Results store on a real SQLite file: sites, launches, jobs and tidy results round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.store import ResultsStore
from protocols.errors import ConfigError
from protocols.results import COLUMNS, ResultRow
from protocols.states import LaunchState


def test_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.add_site("a", 11, "ecdsa-sha2-nistp384 AAAA")
    store.add_site("b", 12, None)
    assert store.site_nodes() == {11: "a", 12: "b"}
    assert store.revoke_site("b") == 12
    assert store.site_nodes() == {11: "a"}
    with pytest.raises(ConfigError, match="no active site"):
        store.revoke_site("b")

    store.put_study(
        study_id="s", version="1", title="t", protocol_hash="h" * 64, protocol_yaml="x", model_hash="m" * 64
    )
    store.new_launch("L1", "s", "h" * 64)
    store.set_job("L1", 0, "a", job_id="L1.r0.a", state="queued", detail=None)
    store.set_job("L1", 0, "a", job_id="L1.r0.a", state="stored", detail=None, software_version="0.1.0")
    assert [j["state"] for j in store.jobs("L1")] == ["stored"]
    row = ResultRow("s", 0, "a", "evaluate", "phase", "accuracy", 0.5, 0.4, 0.6, 6, 100, 0.0, False)
    store.add_results("L1", [row, row])  # idempotent per (launch, round, center, task, metric)
    frame = store.results_frame("L1")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 1 and frame.iloc[0]["estimate"] == 0.5
    with pytest.raises(ConfigError, match="no finished launch"):
        store.latest_launch("s")
    store.finish_launch("L1", LaunchState.FINISHED)
    assert store.latest_launch("s")["launch_id"] == "L1"


def test_bad_url() -> None:
    with pytest.raises(ConfigError, match="cannot open the results store"):
        ResultsStore("nosuchdriver://x")
