"""The coordinator's state machine: a real SQLite store, sites that answer like engines, an injected clock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from coordinator_fakes import (
    ACCURACY,
    LAUNCH,
    NODES,
    PROTOCOL,
    Clock,
    FakeSite,
    HubDied,
    job_id,
    jobs,
    new_store,
    run,
)

from hub.store import ResultsStore
from protocols import __version__
from protocols.contract import JobState, Op
from protocols.records import config_record, metric_record, metric_record_name
from protocols.states import LaunchState, SiteState


@pytest.fixture
def sites() -> dict[str, FakeSite]:
    return {name: FakeSite(name) for name in NODES.values()}


def test_pending_submit_status_fetch_stored(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store, clock = new_store(tmp_path), Clock()
    transport = run(store, sites, clock)
    for name, site in sites.items():
        assert site.ops == [Op.SUBMIT, Op.STATUS, Op.STATUS, Op.FETCH]
        assert transport.seen[name] == [None, "queued", "running", "done"]  # none stored yet = pending
        assert jobs(store)[name]["state"] == SiteState.STORED.value == "stored"
        assert jobs(store)[name]["job_id"] == job_id(name) and jobs(store)[name]["software_version"] == __version__
    # The protocol's poll interval (never a real sleep) after the submit and the first status; the status that
    # finds the job done is followed by the fetch at once.
    assert clock.slept == [3, 3]
    assert store.launch(LAUNCH)["state"] == LaunchState.FINISHED.value
    frame = store.results_frame(LAUNCH).set_index(["center", "metric"])
    assert frame.loc[("a", "accuracy"), "estimate"] == 0.75 and frame.loc[("b", "accuracy"), "n_videos"] == 4
    assert bool(frame.loc[("a", "f1"), "suppressed"]) and pd.isna(frame.loc[("a", "f1"), "estimate"])
    assert set(frame.reset_index()["role"]) == {"evaluate"}


def test_a_site_that_never_connects_is_absent_at_the_deadline(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store, clock = new_store(tmp_path), Clock()
    start = clock.now
    sites["b"].connected = False
    run(store, sites, clock)
    assert jobs(store)["a"]["state"] == "stored"
    assert jobs(store)["b"]["state"] == SiteState.ABSENT.value == "absent"
    assert jobs(store)["b"]["detail"] == "no reply before the deadline"
    assert sites["b"].ops == []
    assert clock.now - start >= PROTOCOL.round_plan.deadline_minutes * 60  # the deadline passed, on the clock
    assert sum(clock.slept) < PROTOCOL.round_plan.deadline_minutes * 60 + 3
    assert store.launch(LAUNCH)["state"] == "finished"  # the study goes on without the absent site


@pytest.mark.parametrize(
    ("break_it", "detail"),
    [
        (
            lambda s: s.extra_records.update(predictions=config_record({"video01.frame0001": "ClippingCutting"})),
            "reply broke the message contract: record 'predictions' is not allowed",
        ),
        (
            lambda s: s.extra_records.update(
                {metric_record_name("phase", "accuracy"): metric_record({**ACCURACY, "per_video": 0.5})}
            ),
            "reply broke the message contract: .*keys not in the contract: \\['per_video'\\]",
        ),
        (
            lambda s: s.extra_records.update(
                {metric_record_name("phase", "accuracy"): metric_record({**ACCURACY, "n_videos": "4"})}
            ),
            "reply broke the message contract: .*n_videos: expected int",
        ),
        (
            lambda s: setattr(s, "status_state", "finished-ish"),
            r"reply broke the message contract: status reply: job.state 'finished-ish' is not in its list",
        ),
    ],
    ids=["per-frame-predictions", "extra-metric-key", "count-as-text", "state-outside-the-vocabulary"],
)
def test_a_reply_that_breaks_the_contract_is_an_error_for_that_site_only(
    tmp_path: Path, sites: dict[str, FakeSite], break_it: Any, detail: str
) -> None:
    store, clock = new_store(tmp_path), Clock()
    break_it(sites["b"])
    run(store, sites, clock)
    assert jobs(store)["a"]["state"] == "stored"
    assert jobs(store)["b"]["state"] == SiteState.ERROR.value == "error"
    assert re.search(detail, jobs(store)["b"]["detail"]), jobs(store)["b"]["detail"]
    assert set(store.results_frame(LAUNCH)["center"]) == {"a"}  # nothing of b's reply reached the results
    assert store.launch(LAUNCH)["state"] == "finished"


def test_a_result_for_another_protocol_is_refused(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store, clock = new_store(tmp_path), Clock()
    sites["b"].protocol_hash = "cd" * 32
    run(store, sites, clock)
    assert jobs(store)["b"]["state"] == "error"
    assert jobs(store)["b"]["detail"] == f"result for protocol {'cd' * 6}, expected {PROTOCOL.content_hash[:12]}"
    assert jobs(store)["a"]["state"] == "stored" and set(store.results_frame(LAUNCH)["center"]) == {"a"}


def test_a_restarted_coordinator_resubmits_the_same_job_id_and_gets_the_same_job(
    tmp_path: Path, sites: dict[str, FakeSite]
) -> None:
    store = new_store(tmp_path)
    with pytest.raises(HubDied):  # the sites accepted the submission; the hub died before it recorded that
        run(store, sites, Clock(), die_on_call=1)
    assert jobs(store) == {} and store.launch(LAUNCH)["state"] == "running"
    sites["a"].jobs[job_id("a")] = JobState.RUNNING  # the site's engine went on working meanwhile

    restarted = ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}")  # new objects over the same store
    transport = run(restarted, sites, Clock())
    for name, site in sites.items():
        assert site.submissions == [job_id(name), job_id(name)]  # the same job id, submitted again
        assert list(site.jobs) == [job_id(name)]  # and still one job at the site
        assert jobs(restarted)[name]["state"] == "stored"
    assert transport.seen["a"][:2] == [None, "running"]  # the resubmission answered with the job as it stood
    assert transport.seen["b"][:2] == [None, "queued"]
    assert restarted.launch(LAUNCH)["state"] == "finished"


def test_a_restart_after_the_submission_was_recorded_polls_instead(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store = new_store(tmp_path)
    with pytest.raises(HubDied):
        run(store, sites, Clock(), die_on_call=2)  # the first answers were stored; the first poll was lost
    assert {n: j["state"] for n, j in jobs(store).items()} == {"a": "queued", "b": "queued"}
    restarted = ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}")
    run(restarted, sites, Clock())
    for name, site in sites.items():
        assert site.submissions == [job_id(name)]
        assert site.ops[0] is Op.SUBMIT and Op.SUBMIT not in site.ops[1:]
        assert jobs(restarted)[name]["state"] == "stored"


# -- studies that run for weeks: per-round deadlines in the store, quorum, sites that drop out, reruns ------------
