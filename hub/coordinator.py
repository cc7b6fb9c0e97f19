"""Study coordination as plain Python: submit jobs to the roster, poll, fetch, store; state lives in the store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from protocols.contract import JobKind, JobState, Op, WireRecords, check_records, parse_metric_record_name
from protocols.errors import ContractError
from protocols.results import ResultRow, Role
from protocols.study import StudyProtocol, loads_protocol

log = logging.getLogger(__name__)
ABSENT = "absent"  # the site never connected before the deadline
STORED = "stored"  # the site's released numbers are in the store
# A site's job is over for this round in these states ("done" is not: its numbers still have to be fetched).
FINAL_SITE_STATES = {STORED, "error", ABSENT, JobState.FAILED.value, JobState.REFUSED.value, JobState.REJECTED.value}


@dataclass
class Reply:
    records: WireRecords | None = None
    error: str | None = None


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]: ...


class Store(Protocol):
    def launch(self, launch_id: str) -> dict: ...
    def study(self, study_id: str) -> dict: ...
    def site_nodes(self) -> dict[int, str]: ...
    def set_job(self, launch_id: str, round_: int, center: str, **values: object) -> None: ...
    def jobs(self, launch_id: str) -> list[dict]: ...
    def add_results(self, launch_id: str, rows: list[ResultRow]) -> None: ...
    def finish_launch(self, launch_id: str, state: str, detail: str | None = None) -> None: ...


class NodeDirectory:
    """Which connected node is which site: from the hub's key registrations, or (insecure mode only) from hello."""

    def __init__(self, transport: Transport, registered: dict[int, str]) -> None:
        self.transport = transport
        self.names = dict(registered)
        self.self_declared = not registered
        if self.self_declared:
            log.warning("no registered site keys: trusting the names sites declare (insecure mode)")

    def connected(self) -> dict[str, int]:
        ids = self.transport.node_ids()
        unknown = [n for n in ids if n not in self.names]
        if self.self_declared and unknown:
            replies = self.transport.request({n: (Op.HELLO, {}) for n in unknown}, timeout=60)
            for node, reply in replies.items():
                if reply.records and "site" in reply.records:
                    self.names[node] = str(reply.records["site"]["values"].get("site-name", ""))
        return {self.names[n]: n for n in ids if n in self.names}


@dataclass
class SiteTrack:
    center: str
    job_id: str
    state: str = "pending"
    node: int | None = None


@dataclass
class RoundRunner:
    """One round: every roster site gets a job; replies are validated against the contract before storing."""

    transport: Transport
    store: Store
    protocol: StudyProtocol
    launch_id: str
    round: int
    directory: NodeDirectory
    protocol_text: str
    sleep: Callable[[float], None] = time.sleep
    tracks: dict[str, SiteTrack] = field(default_factory=dict)

    def __post_init__(self) -> None:
        previous = {j["center"]: j for j in self.store.jobs(self.launch_id) if j["round"] == self.round}
        for site in self.protocol.sites:
            job_id = f"{self.launch_id}.r{self.round}.{site}"
            state = previous.get(site, {}).get("state", "pending")
            self.tracks[site] = SiteTrack(site, job_id, "pending" if state == ABSENT else state)

    def _record(self, track: SiteTrack, state: str, detail: str | None = None, version: str | None = None) -> None:
        if state != track.state or detail:
            log.info("round %d %s: %s %s", self.round, track.center, state, detail or "")
        track.state = state
        values: dict[str, object] = {"job_id": track.job_id, "state": state, "detail": detail}
        if version:
            values["software_version"] = version
        self.store.set_job(self.launch_id, self.round, track.center, **values)

    def _open(self) -> list[SiteTrack]:
        return [t for t in self.tracks.values() if t.state not in FINAL_SITE_STATES]

    def run(self, deadline: float) -> None:
        while (open_tracks := self._open()) and time.time() < deadline:
            connected = self.directory.connected()
            requests: dict[int, tuple[Op, WireRecords]] = {}
            for track in open_tracks:
                track.node = connected.get(track.center)
                if track.node is None:
                    continue
                requests[track.node] = self._next_request(track)
            if requests:
                timeout = max(5.0, min(120.0, deadline - time.time()))
                replies = self.transport.request(requests, timeout=timeout)
                for track in open_tracks:
                    if track.node in replies:
                        self._handle(track, requests[track.node][0], replies[track.node])
            if self._open():
                self.sleep(self.protocol.round_plan.poll_seconds)
        for track in self._open():
            self._record(track, ABSENT if track.state == "pending" else track.state,
                         "no reply before the round deadline")

    def _next_request(self, track: SiteTrack) -> tuple[Op, WireRecords]:
        job = {"job-id": track.job_id}
        if track.state == "pending":
            kind = JobKind.EVALUATE.value
            return Op.SUBMIT, {"job": {"kind": "config", "values": {
                **job, "kind": kind, "study": self.protocol.study_id, "round": self.round,
                "protocol-hash": self.protocol.content_hash, "protocol": self.protocol_text}}}
        op = Op.FETCH if track.state == JobState.DONE.value else Op.STATUS
        return op, {"job": {"kind": "config", "values": job}}

    def _handle(self, track: SiteTrack, op: Op, reply: Reply) -> None:
        if reply.error is not None or reply.records is None:
            self._record(track, "error", f"site error: {reply.error}")
            return
        try:
            check_records(op, reply.records)
        except ContractError as exc:
            self._record(track, "error", f"reply broke the message contract: {exc}")
            return
        job = reply.records["job"]["values"]
        state, detail = str(job["state"]), job.get("detail")
        if op is Op.FETCH and state == JobState.DONE.value:
            self._store_results(track, reply.records)
            return
        # "done" from a status poll is fetched on the next poll; the job is not over before its numbers are stored.
        self._record(track, state, detail)

    def _store_results(self, track: SiteTrack, records: WireRecords) -> None:
        meta = records.get("meta", {}).get("values", {})
        if meta.get("protocol-hash") != self.protocol.content_hash:
            self._record(track, "error", f"result for protocol {str(meta.get('protocol-hash'))[:12]}, "
                                         f"expected {self.protocol.content_hash[:12]}")
            return
        rows = []
        for name, record in records.items():
            parsed = parse_metric_record_name(name)
            if parsed is None:
                continue
            v = record["values"]
            rows.append(ResultRow(
                study=self.protocol.study_id, round=self.round, center=track.center, role=Role.EVALUATE.value,
                task=parsed[0], metric=parsed[1], estimate=v.get("estimate"), ci_low=v.get("ci_low"),
                ci_high=v.get("ci_high"), n_videos=v.get("n_videos"), n_frames=v.get("n_frames"),
                parse_fail_rate=v.get("parse_fail_rate"), suppressed=bool(v["suppressed"])))
        self.store.add_results(self.launch_id, rows)
        self._record(track, STORED, None, version=str(meta.get("software-version")))


def run_launch(transport: Transport, store: Store, launch_id: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run every round of a launch; a failing site is recorded against that site and the study goes on."""
    launch = store.launch(launch_id)
    study = store.study(launch["study_id"])
    protocol = loads_protocol(study["protocol_yaml"], f"study {study['study_id']}")
    if protocol.content_hash != launch["protocol_hash"]:
        store.finish_launch(launch_id, "failed", "the hub's package version changed since launch; launch again")
        return
    deadline = time.time() + protocol.round_plan.deadline_minutes * 60
    directory = NodeDirectory(transport, store.site_nodes())
    try:
        for round_ in range(protocol.round_plan.rounds):
            RoundRunner(transport, store, protocol, launch_id, round_, directory, study["protocol_yaml"],
                        sleep=sleep).run(deadline)
    except Exception as exc:
        store.finish_launch(launch_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_launch(launch_id, "finished")
