"""Study coordination as plain Python: submit jobs to the roster, poll, fetch, store; state lives in the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from protocols.contract import JobKind, JobState, Op, WireRecords, check_records, parse_metric_record_name
from protocols.errors import ContractError
from protocols.results import ResultRow
from protocols.study import StudyProtocol, loads_protocol

log = logging.getLogger(__name__)
ABSENT = "absent"  # the site never connected before the deadline
STORED = "stored"  # the site's released numbers (or adapter) are in the store
# A site's job is over for this round in these states ("done" is not: its result still has to be fetched).
FINAL_SITE_STATES = {STORED, "error", ABSENT, JobState.FAILED.value, JobState.REFUSED.value, JobState.REJECTED.value}
TrainHandler = Callable[[str, WireRecords], None]


@dataclass
class Reply:
    records: WireRecords | None = None
    error: str | None = None


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]: ...


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
class Step:
    """One job per site in one round: an evaluation, or a training round that returns adapters."""

    kind: JobKind
    round: int
    sites: tuple[str, ...]
    adapter: WireRecords = field(default_factory=dict)  # the global adapter records sent with each job
    on_train: TrainHandler | None = None


@dataclass
class SiteTrack:
    center: str
    job_id: str
    state: str = "pending"
    node: int | None = None


@dataclass
class Launch:
    """What every step of a launch shares."""

    transport: Transport
    store: Any  # hub.store.ResultsStore (kept structural so tests may pass another real store)
    protocol: StudyProtocol
    launch_id: str
    protocol_text: str
    directory: NodeDirectory
    deadline: float
    sleep: Callable[[float], None] = time.sleep


class StepRunner:
    """Drives one step to the end: submit, poll, fetch; replies are checked against the contract first."""

    def __init__(self, launch: Launch, step: Step) -> None:
        self.l, self.step = launch, step
        previous = {
            j["center"]: j["state"]
            for j in launch.store.jobs(launch.launch_id)
            if j["round"] == step.round and j["kind"] == step.kind.value
        }
        self.tracks = {}
        for site in step.sites:
            state = previous.get(site, "pending")
            job_id = f"{launch.launch_id}.r{step.round}.{step.kind.value}.{site}"
            self.tracks[site] = SiteTrack(site, job_id, "pending" if state == ABSENT else state)

    def _record(self, track: SiteTrack, state: str, detail: str | None = None, **extra: object) -> None:
        if state != track.state or detail:
            log.info("round %d %s %s: %s %s", self.step.round, self.step.kind.value, track.center, state, detail or "")
        track.state = state
        self.l.store.set_job(
            self.l.launch_id,
            self.step.round,
            track.center,
            kind=self.step.kind.value,
            job_id=track.job_id,
            state=state,
            detail=detail,
            **extra,
        )

    def _open(self) -> list[SiteTrack]:
        return [t for t in self.tracks.values() if t.state not in FINAL_SITE_STATES]

    def run(self) -> None:
        while (open_tracks := self._open()) and time.time() < self.l.deadline:
            connected = self.l.directory.connected()
            requests: dict[int, tuple[Op, WireRecords]] = {}
            for track in open_tracks:
                track.node = connected.get(track.center)
                if track.node is not None:
                    requests[track.node] = self._next_request(track)
            if requests:
                timeout = max(5.0, min(120.0, self.l.deadline - time.time()))
                replies = self.l.transport.request(requests, timeout=timeout)
                for track in open_tracks:
                    if track.node in replies:
                        self._handle(track, requests[track.node][0], replies[track.node])
            if self._open():
                self.l.sleep(self.l.protocol.round_plan.poll_seconds)
        for track in self._open():
            self._record(track, ABSENT if track.state == "pending" else track.state, "no reply before the deadline")

    def _next_request(self, track: SiteTrack) -> tuple[Op, WireRecords]:
        job = {"job-id": track.job_id}
        if track.state == "pending":
            return Op.SUBMIT, {
                "job": {
                    "kind": "config",
                    "values": {
                        **job,
                        "kind": self.step.kind.value,
                        "study": self.l.protocol.study_id,
                        "round": self.step.round,
                        "protocol-hash": self.l.protocol.content_hash,
                        "protocol": self.l.protocol_text,
                    },
                },
                **self.step.adapter,
            }
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
        anchor = reply.records.get("audit", {}).get("values")
        if anchor and not self.l.store.add_anchor(track.center, int(anchor["seq"]), str(anchor["head"])):
            log.warning(
                "site %s sent a second audit head for entry %s: its log was rewritten", track.center, anchor["seq"]
            )
        job = reply.records["job"]["values"]
        state, detail = str(job["state"]), job.get("detail")
        if op is Op.FETCH and state == JobState.DONE.value:
            self._store(track, reply.records)
            return
        # "done" from a status poll is fetched on the next poll; the job is not over before its result is stored.
        self._record(track, state, detail)

    def _store(self, track: SiteTrack, records: WireRecords) -> None:
        meta = records.get("meta", {}).get("values", {})
        if meta.get("protocol-hash") != self.l.protocol.content_hash:
            self._record(
                track,
                "error",
                f"result for protocol {str(meta.get('protocol-hash'))[:12]}, "
                f"expected {self.l.protocol.content_hash[:12]}",
            )
            return
        version = str(meta.get("software-version"))
        if self.step.kind is JobKind.TRAIN:
            try:
                assert self.step.on_train is not None
                self.step.on_train(track.center, records)
            except ContractError as exc:
                self._record(track, "error", f"adapter refused: {exc}")
                return
            epsilon = records.get("train", {}).get("values", {}).get("epsilon")
            self._record(track, STORED, None, software_version=version, epsilon=epsilon)
            return
        self.l.store.add_results(self.l.launch_id, list(self._rows(track.center, records)))
        self._record(track, STORED, None, software_version=version)

    def _rows(self, center: str, records: WireRecords) -> list[ResultRow]:
        rows = []
        for name, record in records.items():
            parsed = parse_metric_record_name(name)
            if parsed is None:
                continue
            v = record["values"]
            rows.append(
                ResultRow(
                    study=self.l.protocol.study_id,
                    round=self.step.round,
                    center=center,
                    role=self.l.protocol.role(center),
                    task=parsed[0],
                    metric=parsed[1],
                    estimate=v.get("estimate"),
                    ci_low=v.get("ci_low"),
                    ci_high=v.get("ci_high"),
                    n_videos=v.get("n_videos"),
                    n_frames=v.get("n_frames"),
                    parse_fail_rate=v.get("parse_fail_rate"),
                    suppressed=bool(v["suppressed"]),
                )
            )
        return rows


def run_launch(
    transport: Transport,
    store: Any,
    launch_id: str,
    *,
    adapters_dir: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run every round of a launch; a failing site is recorded against that site and the study goes on."""
    from hub.federated import train_step  # torch and peft only when a study fine-tunes

    row = store.launch(launch_id)
    study = store.study(row["study_id"])
    protocol = loads_protocol(study["protocol_yaml"], f"study {study['study_id']}")
    if protocol.content_hash != row["protocol_hash"]:
        store.finish_launch(launch_id, "failed", "the hub's package version changed since launch; launch again")
        return
    launch = Launch(
        transport,
        store,
        protocol,
        launch_id,
        study["protocol_yaml"],
        NodeDirectory(transport, store.site_nodes()),
        time.time() + protocol.round_plan.deadline_minutes * 60,
        sleep,
    )
    adapter: WireRecords = {}
    try:
        for round_ in protocol.round_numbers:
            if round_ >= 1 and protocol.finetune is not None:
                adapter = train_step(launch, round_, adapter, adapters_dir or Path("adapters"))
            StepRunner(launch, Step(JobKind.EVALUATE, round_, protocol.sites, adapter)).run()
    except Exception as exc:
        store.finish_launch(launch_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_launch(launch_id, "finished")
