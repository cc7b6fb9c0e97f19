"""Results store on a real SQLite file: sites, launches, jobs and tidy results round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.home import HubHome
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


def test_audit_anchors_are_kept_first_come_and_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main as hub_main

    home = tmp_path / "hub"
    assert hub_main(["init", "--home", str(home), "--study", "s"]) == 0
    store = HubHome(home).store()
    assert store.add_anchor("a", 1, "1" * 64) and store.add_anchor("a", 2, "2" * 64)
    assert store.add_anchor("a", 2, "2" * 64)  # the same anchor again (a retried reply)
    assert not store.add_anchor("a", 2, "f" * 64)  # a rewritten log: the first head stays
    store.add_anchor("b", 1, "b" * 64)
    assert [(r["seq"], r["head"]) for r in store.anchors("a")] == [(1, "1" * 64), (2, "2" * 64)]
    out = tmp_path / "a.anchors"
    assert hub_main(["sites", "anchors", "a", "--home", str(home), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["site"], r["seq"], r["head"]) for r in rows] == [("a", 1, "1" * 64), ("a", 2, "2" * 64)]
