"""The study-lifecycle queries on SQLite and the real PostgreSQL server: round deadlines, atomic results, launches."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hub.store import ResultsStore, results
from hub.store_rounds import StudyRounds
from protocols.results import ResultRow
from protocols.states import LaunchState


def row(center: str, estimate: float) -> ResultRow:
    return ResultRow("s", 0, center, "evaluate", "phase", "accuracy", estimate, 0.1, 0.9, 5, 50, 0.0, False)


def test_round_deadlines_are_kept_moved_and_closed_once(store_url: str) -> None:
    rounds = StudyRounds(ResultsStore(store_url))
    first = rounds.open_round("L", 0, "evaluate", 3600, 1000.0)
    assert first["deadline_at"] == 4600.0
    assert rounds.open_round("L", 0, "evaluate", 99, 5000.0)["deadline_at"] == 4600.0  # a restart keeps it
    assert rounds.move_deadline("L", 0, 7 * 86400) == [4600.0 + 7 * 86400]
    rounds.close_round("L", 0, "evaluate", "deadline")
    rounds.close_round("L", 0, "evaluate", "complete")  # a later pass does not rewrite why it closed
    (step,) = rounds.rounds("L")
    assert step["close_reason"] == "deadline" and step["closed_at"] is not None
    assert rounds.move_deadline("L", 0, 60) == []  # a closed round does not move
    rounds.reopen_round("L", 0, "evaluate", 9000.0)
    assert rounds.rounds("L")[0]["closed_at"] is None and rounds.deadline("L", 0, "evaluate") == 9000.0


def test_a_result_and_its_stored_state_are_written_together_once(store_url: str) -> None:
    store = ResultsStore(store_url)
    rounds = StudyRounds(store)
    store.set_job("L", 0, "a", job_id="j-a", state="done")
    for _ in range(2):  # a restarted hub that fetched again stores the same rows, never a second copy
        rounds.store_result("L", 0, "a", "evaluate", [row("a", 0.5)], job_id="j-a", attempt=0, software_version="1")
    with pytest.raises(Exception):  # noqa: B017,PT011 - any driver error: the row is not a ResultRow
        rounds.store_result("L", 0, "b", "evaluate", [row("b", 0.5), "not a row"], job_id="j-b")  # type: ignore[list-item]
    assert {j["center"]: j["state"] for j in store.jobs("L")} == {"a": "stored"}  # b: neither rows nor a state
    with store.engine.connect() as con:
        assert con.execute(select(func.count()).select_from(results)).scalar() == 1


def test_open_launches_and_a_resumed_run(store_url: str) -> None:
    store = ResultsStore(store_url)
    rounds = StudyRounds(store)
    store.new_launch("L1", "s", "h" * 64, state="pending")
    store.new_launch("L2", "s", "h" * 64)
    store.new_launch("L3", "s", "h" * 64)
    store.finish_launch("L3", LaunchState.FINISHED)
    assert [r["launch_id"] for r in rounds.open_launches()] == ["L1", "L2"]
    rounds.set_running("L1", "123")
    assert store.launch("L1")["state"] == "running" and store.launch("L1")["run_id"] == "123"
    assert rounds.newest_launch("s")["launch_id"] in {"L1", "L2", "L3"}
