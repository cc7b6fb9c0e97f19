"""The coordinator's state machine: a real SQLite store, sites that answer like engines, an injected clock."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hub.coordinator import Reply
from hub.home import HubHome
from hub.launch_runner import run_launch
from hub.store import ResultsStore
from hub.store_rounds import StudyRounds
from hub.studies import rerun_sites
from protocols import __version__
from protocols.contract import JobState, Op, WireRecords, check_records, job_id_for
from protocols.errors import ConfigError
from protocols.records import config_record, job_reply, metric_record, metric_record_name, result_meta
from protocols.states import LaunchState, SiteState
from protocols.study import loads_protocol

PROTOCOL_YAML = f"""
study: {{id: coord, version: "1"}}
sites: [a, b]
model: {{manifest_sha256: "{"ab" * 32}"}}
tasks: [phase]
round_plan: {{rounds: 1, deadline_minutes: 10, poll_seconds: 3}}
privacy: {{min_videos: 2}}
"""
PROTOCOL = loads_protocol(PROTOCOL_YAML, "coord.yaml")
LAUNCH = "coord-L1"
NODES = {11: "a", 12: "b"}
ACCURACY = {"estimate": 0.75, "ci_low": 0.6, "ci_high": 0.9, "n_videos": 4, "n_frames": 120, "suppressed": 0}


def job_id(site: str) -> str:
    return job_id_for(LAUNCH, 0, "evaluate", site)


class Clock:
    """Time that moves only when the coordinator sleeps, so a 10-minute deadline passes at once."""

    def __init__(self) -> None:
        self.now = time.time()  # from now: a rerun's reopened deadline is set on the wall clock
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeSite:
    """Answers like a site engine: one job per id (a resubmission gets the job as it stands), queued -> running
    -> done over status polls, and a fetch reply built by the contract builders and checked by the contract."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = True
        self.jobs: dict[str, JobState] = {}
        self.ops: list[Op] = []
        self.submissions: list[str] = []
        self.protocol_hash = PROTOCOL.content_hash
        self.asked_hash = PROTOCOL.content_hash  # what the hub must ask for
        self.extra_records: WireRecords = {}  # what a misbehaving site adds to its result
        self.status_state: str | None = None  # a state outside the vocabulary, sent raw

    def answer(self, op: Op, records: WireRecords) -> Reply:
        check_records(op, records, direction="request")  # the hub asks only what the contract allows
        self.ops.append(op)
        jid = records["job"]["values"]["job-id"]
        if op is Op.SUBMIT:
            assert records["job"]["values"]["protocol-hash"] == self.asked_hash
            self.submissions.append(jid)
            self.jobs.setdefault(jid, JobState.QUEUED)
            return Reply(records=job_reply(jid, self.jobs[jid], progress=0.0))
        if op is Op.STATUS:
            self.jobs[jid] = {JobState.QUEUED: JobState.RUNNING}.get(self.jobs[jid], JobState.DONE)
            reply = job_reply(jid, self.jobs[jid], progress=0.5)
            if self.status_state is not None:
                reply["job"]["values"]["state"] = self.status_state
            return Reply(records=reply)
        assert self.jobs[jid] is JobState.DONE, "the hub fetched a job that was not done"
        result = {
            **job_reply(jid, JobState.DONE),
            **result_meta(__version__, self.protocol_hash),
            metric_record_name("phase", "accuracy"): metric_record(ACCURACY),
            metric_record_name("phase", "f1"): metric_record({"suppressed": 1}),
        }
        check_records(Op.FETCH, result)  # what an honest site sends passes the contract
        return Reply(records={**result, **self.extra_records})


class HubDied(BaseException):
    """The ServerApp process dying mid-request (a BaseException, so no handler records anything)."""


class FakeTransport:
    """The coordinator's Transport over fake sites; notes each site's stored state before every exchange."""

    def __init__(self, sites: dict[int, FakeSite], store: ResultsStore, die_on_call: int | None = None) -> None:
        self.sites, self.store, self.die_on_call = sites, store, die_on_call
        self.calls = 0
        self.seen: dict[str, list[str | None]] = {s.name: [] for s in sites.values()}

    def node_ids(self) -> list[int]:
        return [node for node, site in self.sites.items() if site.connected]

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]:
        assert 5.0 <= timeout <= 120.0
        stored = {j["center"]: j["state"] for j in self.store.jobs(LAUNCH)}
        for site in self.seen:
            if not self.seen[site] or self.seen[site][-1] != stored.get(site):
                self.seen[site].append(stored.get(site))
        self.calls += 1
        replies = {node: self.sites[node].answer(op, records) for node, (op, records) in requests.items()}
        if self.calls == self.die_on_call:
            raise HubDied  # the sites handled the requests; the hub never recorded their answers
        return replies


def new_store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}")
    for node, name in NODES.items():
        store.add_site(name, node, None)
    store.put_study(
        study_id=PROTOCOL.study_id,
        version=PROTOCOL.version,
        title=PROTOCOL.title,
        protocol_hash=PROTOCOL.content_hash,
        protocol_yaml=PROTOCOL_YAML,
        model_hash=PROTOCOL.model_sha256,
    )
    store.new_launch(LAUNCH, PROTOCOL.study_id, PROTOCOL.content_hash)
    return store


def run(store: ResultsStore, sites: dict[str, FakeSite], clock: Clock, **kw: Any) -> FakeTransport:
    transport = FakeTransport({node: sites[name] for node, name in NODES.items()}, store, **kw)
    run_launch(transport, store, LAUNCH, sleep=clock.sleep, clock=clock)
    return transport


def jobs(store: ResultsStore) -> dict[str, dict[str, Any]]:
    return {j["center"]: j for j in store.jobs(LAUNCH)}


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
    assert clock.slept == [3, 3, 3]  # the protocol's poll interval, never a real sleep
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


def with_round_plan(store: ResultsStore, sites: dict[str, FakeSite], round_plan: str) -> None:
    """Register the study again with another round plan (the launch's hash follows it)."""
    text = PROTOCOL_YAML.replace("{rounds: 1, deadline_minutes: 10, poll_seconds: 3}", round_plan)
    protocol = loads_protocol(text, "coord.yaml")
    store.put_study(
        study_id=protocol.study_id,
        version=protocol.version,
        title=protocol.title,
        protocol_hash=protocol.content_hash,
        protocol_yaml=text,
        model_hash=protocol.model_sha256,
    )
    with store.engine.begin() as con:
        con.exec_driver_sql("UPDATE launches SET protocol_hash = ?", (protocol.content_hash,))
    for site in sites.values():
        site.protocol_hash = site.asked_hash = protocol.content_hash


def test_the_round_deadline_is_kept_in_the_store_and_a_restart_keeps_it(
    tmp_path: Path, sites: dict[str, FakeSite]
) -> None:
    store, clock = new_store(tmp_path), Clock()
    with_round_plan(store, sites, "{rounds: 1, deadline: 36h, poll_seconds: 600}")
    sites["b"].connected = False
    start = clock.now
    with pytest.raises(HubDied):  # the hub dies in the round, a's job accepted
        run(store, sites, clock, die_on_call=2)
    (step,) = StudyRounds(store).rounds(LAUNCH)
    assert step["deadline_at"] == start + 36 * 3600 and step["closed_at"] is None
    run(ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}"), sites, clock)  # restarted: the same deadline, not a new one
    assert clock.now - start < 36 * 3600 + 600
    (step,) = StudyRounds(store).rounds(LAUNCH)
    assert step["close_reason"] == "deadline" and jobs(store)["b"]["state"] == "absent"


def test_a_quorum_closes_the_round_once_enough_sites_delivered(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store, clock = new_store(tmp_path), Clock()
    with_round_plan(store, sites, "{rounds: 1, deadline: 14d, min_sites: 1, poll_seconds: 3}")
    sites["b"].connected = False
    start = clock.now
    run(store, sites, clock)
    assert clock.now - start < 60  # not two weeks: a stored, the round closed at its quorum
    assert jobs(store)["a"]["state"] == "stored"
    assert jobs(store)["b"]["state"] == "absent" and "quorum of 1" in jobs(store)["b"]["detail"]
    assert StudyRounds(store).rounds(LAUNCH)[0]["close_reason"] == "quorum"


def test_an_unreachable_engine_is_asked_again_and_the_job_resumes(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    """A site whose engine is restarting answers polls with errors; the job it holds is not given up."""
    store, clock = new_store(tmp_path), Clock()
    answer = sites["b"].answer
    calls = {"n": 0}

    def flaky(op: Op, records: WireRecords) -> Reply:
        calls["n"] += 1
        if op is Op.STATUS and calls["n"] in (2, 3):  # the engine was killed after accepting the job
            return Reply(error="site engine refused status: [Errno 111] Connection refused")
        return answer(op, records)

    sites["b"].answer = flaky  # type: ignore[method-assign]
    transport = run(store, sites, clock)
    assert jobs(store)["b"]["state"] == "stored" and sites["b"].submissions == [job_id("b")]
    assert transport.seen["b"] == [None, "queued", "running", "done"]  # the errors left its state as it was


def test_rerun_asks_only_missing_and_failed_sites_never_a_stored_one(
    tmp_path: Path, sites: dict[str, FakeSite]
) -> None:
    store, clock = new_store(tmp_path), Clock()
    sites["b"].connected = False
    run(store, sites, clock)
    assert {n: j["state"] for n, j in jobs(store).items()} == {"a": "stored", "b": "absent"}
    rows = len(store.results_frame(LAUNCH))
    home = HubHome(tmp_path, store_url=f"sqlite:///{tmp_path / 'hub.db'}")
    with pytest.raises(ConfigError, match="site 'a' delivered round 0: its result is stored, and a released result"):
        rerun_sites(home, "coord", 0, ["a", "b"], user="t")
    assert rerun_sites(home, "coord", 0, ["b"], user="t", now=clock.now) == {
        "b": job_id("b")
    }  # absent: asked under its id
    assert store.launch(LAUNCH)["state"] == "pending" and jobs(store)["b"]["state"] == "pending"
    sites["b"].connected = True
    sites["a"].ops.clear()
    run(store, sites, clock)  # what `hub serve` does with the pending launch
    assert sites["a"].ops == [] and jobs(store)["b"]["state"] == "stored"
    assert len(store.results_frame(LAUNCH)) == rows + 2  # b's two rows, a's not stored twice
    assert store.launch(LAUNCH)["state"] == "finished"


def test_a_failed_site_is_asked_again_under_a_new_job_id(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    store, clock = new_store(tmp_path), Clock()
    store.set_job(LAUNCH, 0, "b", job_id=job_id("b"), state="failed", detail="internal-error")
    run(store, sites, clock)
    home = HubHome(tmp_path, store_url=f"sqlite:///{tmp_path / 'hub.db'}")
    asked = rerun_sites(home, "coord", 0, ["b"], user="t", by="2h", now=clock.now)
    assert asked == {"b": job_id_for(LAUNCH, 0, "evaluate", "b", "a1")}
    run(store, sites, clock)
    assert sites["b"].submissions == [asked["b"]] and jobs(store)["b"]["attempt"] == 1
    assert jobs(store)["b"]["state"] == "stored" and jobs(store)["b"]["job_id"] == asked["b"]


def test_study_events_are_logged_at_info(
    tmp_path: Path, sites: dict[str, FakeSite], caplog: pytest.LogCaptureFixture
) -> None:
    """What a coordinator reads in the hub's log: who connected, what was submitted, each state, what was stored."""
    sites["b"].connected = False
    with caplog.at_level("INFO", logger="hub.coordinator"):
        run(new_store(tmp_path), sites, Clock())
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.coordinator" and r.levelname == "INFO"]
    expected = [
        "site a connected (node 11)",
        f"round 0 evaluate a: submitting job {job_id('a')}",
        "round 0 evaluate a: queued",
        "round 0 evaluate a: running",
        "round 0 evaluate a: done",
        f"round 0 evaluate a: 2 result rows stored (site software {__version__})",
        "round 0 evaluate b: absent no reply before the deadline",
    ]
    assert [line.strip() for line in lines] == expected


def test_a_key_rotated_mid_study_is_followed_by_the_registered_name(tmp_path: Path, sites: dict[str, FakeSite]) -> None:
    """`hub sites rotate` mid-study: the site reconnects as a new node; the launch re-reads the registrations."""
    store, clock = new_store(tmp_path), Clock()
    old = next(n for n, name in NODES.items() if name == "a")
    new = max(NODES) + 100

    class Rotating(FakeTransport):
        def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]:
            replies = super().request(requests, timeout)
            if self.calls == 1:  # after the submit: the old key is gone, the new one registered under the name
                self.sites[new] = self.sites.pop(old)
                store.add_site("a", new, None)
            return replies

    transport = Rotating({node: sites[name] for node, name in NODES.items()}, store)
    run_launch(transport, store, LAUNCH, sleep=clock.sleep, clock=clock)
    assert sites["a"].ops == [Op.SUBMIT, Op.STATUS, Op.STATUS, Op.FETCH]
    assert jobs(store)["a"]["state"] == jobs(store)["b"]["state"] == "stored"
