"""The coordinator over several rounds and restarts: deadlines kept in the store, quorum, resume, rerun, events,
key rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from coordinator_fakes import (
    LAUNCH,
    NODES,
    PROTOCOL_YAML,
    Clock,
    FakeSite,
    FakeTransport,
    HubDied,
    job_id,
    jobs,
    new_store,
    register,
    run,
)

from hub.coordinator import Reply
from hub.home import HubHome
from hub.launch_runner import run_launch
from hub.store import ResultsStore
from hub.store_rounds import StudyRounds
from hub.studies import rerun_sites
from protocols import __version__
from protocols.contract import Op, WireRecords, job_id_for
from protocols.errors import ConfigError


@pytest.fixture
def sites() -> dict[str, FakeSite]:
    return {name: FakeSite(name) for name in NODES.values()}


def with_round_plan(store: ResultsStore, sites: dict[str, FakeSite], round_plan: str) -> None:
    """Register the study again with another round plan (the launch's hash follows it)."""
    text = PROTOCOL_YAML.replace("{rounds: 1, deadline_minutes: 10, poll_seconds: 3}", round_plan)
    protocol = register(store, text)
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
