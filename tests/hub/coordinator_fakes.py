"""Fakes for the coordinator's state-machine tests: sites that answer like engines, an injected clock, a
transport that can die mid-request, over a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hub.coordinator import Reply
from hub.launch_runner import run_launch
from hub.store import ResultsStore
from protocols import __version__
from protocols.contract import JobState, Op, WireRecords, check_records, job_id_for
from protocols.records import job_reply, metric_record, metric_record_name, result_meta
from protocols.study import StudyProtocol, loads_protocol

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


def register(store: ResultsStore, text: str) -> StudyProtocol:
    """Register (or re-register) the study from its protocol text."""
    protocol = loads_protocol(text, "coord.yaml")
    store.put_study(
        study_id=protocol.study_id,
        version=protocol.version,
        title=protocol.title,
        protocol_hash=protocol.content_hash,
        protocol_yaml=text,
        model_hash=protocol.model_sha256,
    )
    return protocol


def new_store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}")
    for node, name in NODES.items():
        store.add_site(name, node, None)
    register(store, PROTOCOL_YAML)
    store.new_launch(LAUNCH, PROTOCOL.study_id, PROTOCOL.content_hash)
    return store


def run(store: ResultsStore, sites: dict[str, FakeSite], clock: Clock, **kw: Any) -> FakeTransport:
    transport = FakeTransport({node: sites[name] for node, name in NODES.items()}, store, **kw)
    run_launch(transport, store, LAUNCH, sleep=clock.sleep, clock=clock)
    return transport


def jobs(store: ResultsStore) -> dict[str, dict[str, Any]]:
    return {j["center"]: j for j in store.jobs(LAUNCH)}
