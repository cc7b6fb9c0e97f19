"""Study coordination as plain Python: submit jobs to the roster, poll, fetch, store; state lives in the store."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.store_rounds import StudyRounds
from protocols.contract import (
    CONTRACT_VERSION_KEY,
    JobKind,
    JobState,
    Op,
    WireRecords,
    check_contract_version,
    check_records,
    job_id_for,
)
from protocols.errors import ContractError, SurgFedError
from protocols.mapping import enum_value
from protocols.records import adapter_digest, job_request, parse_metric_record_name, submit_request
from protocols.results import PoolingScale, ResultRow
from protocols.states import LaunchState, SiteState
from protocols.study import StudyProtocol

log = logging.getLogger(__name__)
TrainHandler = Callable[[str, WireRecords], None]


@dataclass
class Reply:
    records: WireRecords | None = None
    error: str | None = None


class LaunchStopped(SurgFedError):
    """The launch was cancelled (or handed to another run) while this one drove it: stop asking the sites."""


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]: ...


class NodeDirectory:
    """Which connected node is which site: from the hub's key registrations, or (insecure mode only) from hello."""

    def __init__(
        self,
        transport: Transport,
        registered: dict[int, str],
        reload: Callable[[], dict[int, str]] | None = None,
    ) -> None:
        self.transport = transport
        self.names = dict(registered)
        self.reload = reload  # the store's registrations again: a key rotated mid-study (`hub sites rotate`)
        self.self_declared = not registered
        self.online: set[str] = set()  # sites connected at the last look, to log who came and went
        if self.self_declared:
            log.warning("no registered site keys: trusting the names sites declare (insecure mode)")

    def connected(self) -> dict[str, int]:
        ids = self.transport.node_ids()
        unknown = [n for n in ids if n not in self.names]
        if unknown and self.reload is not None and not self.self_declared:
            self.names = dict(self.reload())
        elif self.self_declared and unknown:
            replies = self.transport.request({n: (Op.HELLO, {}) for n in unknown}, timeout=60)
            for node, reply in replies.items():
                if reply.records and "site" in reply.records:
                    values = reply.records["site"]["values"]
                    try:
                        check_contract_version(values.get(CONTRACT_VERSION_KEY), f"node {node}")
                    except ContractError as exc:
                        log.error("ignoring node %s: %s", node, exc)
                        continue
                    self.names[node] = str(values.get("site-name", ""))
        now = {self.names[n]: n for n in ids if n in self.names}
        for site in sorted(now.keys() - self.online):
            log.info("site %s connected (node %s)", site, now[site])
        for site in sorted(self.online - now.keys()):
            log.info("site %s disconnected", site)
        self.online = set(now)
        return now


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
    state: SiteState = SiteState.PENDING
    node: int | None = None
    attempt: int = 0
    detail: str | None = None


@dataclass
class Launch:
    """What every step of a launch shares."""

    transport: Transport
    store: Any  # hub.store.ResultsStore (kept structural so tests may pass another real store)
    protocol: StudyProtocol
    launch_id: str
    protocol_text: str
    directory: NodeDirectory
    round_seconds: float  # each step's own deadline, from when it first opens (kept in the store)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time  # injected with `sleep`, so tests step through a deadline at once


class StepRunner:
    """Drives one step to the end: submit, poll, fetch; replies are checked against the contract first."""

    def __init__(self, launch: Launch, step: Step) -> None:
        self.l, self.step = launch, step
        self.rounds = StudyRounds(launch.store)
        previous = {
            j["center"]: j
            for j in launch.store.jobs(launch.launch_id)
            if j["round"] == step.round and j["kind"] == step.kind.value
        }
        self.tracks = {}
        for site in step.sites:
            # A restarted hub asks under the stored job id (a rerun may have set a new one), never a fresh one.
            job = previous.get(site) or {}
            job_id = job.get("job_id") or job_id_for(launch.launch_id, step.round, step.kind.value, site)
            state = SiteState(job.get("state", SiteState.PENDING.value))
            self.tracks[site] = SiteTrack(site, job_id, state, attempt=job.get("attempt") or 0)
        quorum = launch.protocol.round_plan.min_sites or len(step.sites)
        self.quorum = min(quorum, len(step.sites))
        self.rounds.open_round(launch.launch_id, step.round, step.kind.value, launch.round_seconds, launch.clock())

    def _record(self, track: SiteTrack, state: SiteState, detail: str | None = None, **extra: object) -> None:
        if state is not track.state or detail:
            log.info(
                "round %d %s %s: %s %s", self.step.round, self.step.kind.value, track.center, state.value, detail or ""
            )
        track.state, track.detail = state, detail
        self.l.store.set_job(
            self.l.launch_id,
            self.step.round,
            track.center,
            kind=self.step.kind.value,
            job_id=track.job_id,
            state=state.value,
            detail=detail,
            attempt=track.attempt,
            **extra,
        )

    def _open(self) -> list[SiteTrack]:
        return [t for t in self.tracks.values() if not t.state.final]

    def _deadline(self) -> float:
        """Read each time: `hub study extend` may move it while the round runs."""
        return float(self.rounds.deadline(self.l.launch_id, self.step.round, self.step.kind.value))

    def _check_open(self) -> None:
        state = LaunchState(self.l.store.launch(self.l.launch_id)["state"])
        if state is not LaunchState.RUNNING:
            raise LaunchStopped(f"launch {self.l.launch_id} is {state.value}; its sites are not asked any more")

    def _delivered(self) -> int:
        return sum(t.state is SiteState.STORED for t in self.tracks.values())

    def run(self) -> None:
        while (open_tracks := self._open()) and self._delivered() < self.quorum:
            deadline = self._deadline()
            if self.l.clock() >= deadline:
                break
            self._check_open()
            connected = self.l.directory.connected()
            requests: dict[int, tuple[Op, WireRecords]] = {}
            for track in open_tracks:
                track.node = connected.get(track.center)
                if track.node is not None:
                    requests[track.node] = self._next_request(track)
            done_before = {t.center for t in open_tracks if t.state is SiteState.DONE}
            if requests:
                timeout = max(5.0, min(120.0, deadline - self.l.clock()))
                replies = self.l.transport.request(requests, timeout=timeout)
                for track in open_tracks:
                    if track.node in replies:
                        self._handle(track, requests[track.node][0], replies[track.node])
            # A job a status poll has just found done is fetched at once; otherwise wait before asking again.
            just_done = any(t.state is SiteState.DONE and t.center not in done_before for t in self._open())
            if self._open() and self._delivered() < self.quorum and not just_done:
                self.l.sleep(self.l.protocol.round_plan.poll_seconds)
        early = bool(self._open()) and self._delivered() >= self.quorum
        reason = "quorum" if early else "complete" if not self._open() else "deadline"
        why = f"round closed at its quorum of {self.quorum} site(s)" if early else "no reply before the deadline"
        for track in self._open():
            # Still working at the site when the round closed: absent here, and `hub study rerun` fetches it later.
            state = SiteState.ABSENT if track.state is SiteState.PENDING or early else track.state
            self._record(track, state, why)
        self.rounds.close_round(self.l.launch_id, self.step.round, self.step.kind.value, reason)

    def _next_request(self, track: SiteTrack) -> tuple[Op, WireRecords]:
        if track.state is SiteState.PENDING:
            p = self.l.protocol
            job = submit_request(
                track.job_id,
                self.step.kind,
                p.study_id,
                self.step.round,
                p.content_hash,
                self.l.protocol_text,
                adapter_digest(self.step.adapter) if self.step.adapter else None,
            )
            log.info(
                "round %d %s %s: submitting job %s", self.step.round, self.step.kind.value, track.center, track.job_id
            )
            return Op.SUBMIT, {**job, **self.step.adapter}
        return (Op.FETCH if track.state is SiteState.DONE else Op.STATUS), job_request(track.job_id)

    def _handle(self, track: SiteTrack, op: Op, reply: Reply) -> None:
        if reply.error is not None or reply.records is None:
            if track.state is SiteState.PENDING:
                self._record(track, SiteState.ERROR, f"site error: {reply.error}")
            elif track.detail != (retry := f"site unreachable, asking again: {reply.error}"[:500]):
                # The site holds the job (its engine may be restarting and resumes it): ask again until the deadline.
                self._record(track, track.state, retry)
            return
        try:
            check_records(op, reply.records)
            job = reply.records["job"]["values"]
            state = enum_value(JobState, job["state"], f"{op.value} reply: job.state", ContractError)
        except ContractError as exc:
            self._record(track, SiteState.ERROR, f"reply broke the message contract: {exc}")
            return
        anchor = reply.records.get("audit", {}).get("values")
        if anchor and not self.l.store.add_anchor(track.center, int(anchor["seq"]), str(anchor["head"])):
            log.warning(
                "site %s sent a second audit head for entry %s: its log was rewritten", track.center, anchor["seq"]
            )
        # A site says why only with a code from a fixed list; its operator has the details.
        detail = f"{job['reason']} (ask the site's operator for details)" if job.get("reason") else None
        if op is Op.FETCH and state is JobState.DONE:
            self._store(track, reply.records)
            return
        # "done" from a status poll is fetched on the next poll; the job is not over before its result is stored.
        self._record(track, SiteState.of(state), detail)

    def _store(self, track: SiteTrack, records: WireRecords) -> None:
        meta = records.get("meta", {}).get("values", {})
        if meta.get("protocol-hash") != self.l.protocol.content_hash:
            self._record(
                track,
                SiteState.ERROR,
                f"result for protocol {str(meta.get('protocol-hash'))[:12]}, "
                f"expected {self.l.protocol.content_hash[:12]}",
            )
            return
        try:
            check_contract_version(meta.get(CONTRACT_VERSION_KEY), f"site {track.center!r}")
        except ContractError as exc:
            self._record(track, SiteState.ERROR, str(exc))
            return
        version = str(meta.get("software-version"))
        if self.step.kind is JobKind.TRAIN:
            try:
                assert self.step.on_train is not None
                self.step.on_train(track.center, records)
            except ContractError as exc:
                self._record(track, SiteState.ERROR, f"adapter refused: {exc}")
                return
            epsilon = records.get("train", {}).get("values", {}).get("epsilon")
            grpo = records.get("grpo", {}).get("values")  # contract-checked numbers only (GRPO_RECORD)
            rewards = None if grpo is None else json.dumps(grpo, sort_keys=True)
            self._record(track, SiteState.STORED, None, software_version=version, epsilon=epsilon, rewards=rewards)
            return
        rows = list(self._rows(track.center, records))
        job = {"job_id": track.job_id, "attempt": track.attempt, "software_version": version}
        self.rounds.store_result(self.l.launch_id, self.step.round, track.center, self.step.kind.value, rows, **job)
        log.info(
            "round %d %s %s: %d result rows stored (site software %s)",
            self.step.round,
            self.step.kind.value,
            track.center,
            len(rows),
            version,
        )
        track.state, track.detail = SiteState.STORED, None

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
                    se_pooling=v.get("se_pooling"),
                    pooling_scale=_scale_name(v.get("pooling_scale")),
                    undefined_share=v.get("undefined_share"),
                )
            )
        return rows


def _scale_name(code: object) -> str | None:
    """The released pooling-scale code by name; None when absent or unknown (the hub then uses the CI)."""
    try:
        return PoolingScale.from_code(code).value if isinstance(code, int) else None
    except ValueError:
        return None
