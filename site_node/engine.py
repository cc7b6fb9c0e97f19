"""The site engine: owns the loaded model, the data store, the jobs and the release gate for one `serve`."""

from __future__ import annotations

import hmac
import logging
import queue
import threading
from typing import Any

from protocols import __version__
from protocols.contract import (
    CONTRACT_VERSION_KEY,
    JobKind,
    JobState,
    Op,
    Reason,
    WireRecords,
    check_contract_version,
    check_records,
)
from protocols.errors import (
    ConfigError,
    ContractError,
    ContractVersionError,
    DataError,
    ModelError,
    ProtocolError,
    SurgFedError,
)
from protocols.model_ref import manifest_hash
from protocols.records import hello_reply, job_reply
from protocols.study import StudyProtocol
from site_node.admission import admit
from site_node.approvals import approved, is_approved, keep_pending
from site_node.audit import AuditLog
from site_node.audit_events import job_failed
from site_node.evaluation import evaluate_protocol
from site_node.finetune_jobs import (
    check_train,
    load_incoming_adapter,
    model_for_job,
    privacy_context,
    run_train,
    save_incoming_adapter,
)
from site_node.home import ModelBackend, ReleaseMode, SiteHome
from site_node.job_ledger import JobLedger, store_snapshot
from site_node.jobs import Job, JobRefused, JobStore, check_job_id
from site_node.model.devices import DevicePool, start_helpers
from site_node.model.loading import LoadedModel, load_model
from site_node.model.openai_backend import OpenAIModel, served_model
from site_node.model.prefetch import FramePrefetcher
from site_node.policy import PolicyRefused
from site_node.release_gate import ReleaseGate, evaluation_payload
from site_node.store import DataStore
from site_node.training.dp import PrivacyBudgetExceeded

log = logging.getLogger(__name__)
CAP = 128  # longest value from a request that goes into the audit log


def _cap(value: Any, n: int = CAP) -> str | None:
    return None if value is None else str(value)[:n]


def reason_for(exc: BaseException) -> Reason:
    """The code that leaves for a failure; the message stays in the job folder and the log."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, Reason):
        return reason
    if isinstance(exc, PrivacyBudgetExceeded):  # a ledger that was edited or lost stops training too
        return Reason.PRIVACY_BUDGET
    if isinstance(exc, PolicyRefused):
        return Reason.POLICY
    for kind, code in (
        (DataError, Reason.NO_USABLE_DATA),
        (ModelError, Reason.MODEL_MISMATCH),
        (ContractVersionError, Reason.CONTRACT_VERSION),
        (ContractError, Reason.BAD_REQUEST),
        (ProtocolError, Reason.PROTOCOL_MISMATCH),
        (ConfigError, Reason.POLICY),
    ):
        if isinstance(exc, kind):
            return code
    return Reason.INTERNAL_ERROR


def _job_record(job: Job) -> WireRecords:
    """A job as it leaves: id, state, coarse progress and, for failures and refusals, a reason code."""
    failed = job.state in (JobState.FAILED, JobState.REFUSED, JobState.REJECTED)
    reason = Reason(job.reason or Reason.INTERNAL_ERROR.value) if failed else None
    return job_reply(job.job_id, job.state, progress=float(job.progress), reason=reason)


class SiteEngine:
    """Loads the model once; jobs run one at a time on a worker thread; requests are answered at once."""

    def __init__(self, home: SiteHome, *, load: bool = True) -> None:
        self.home = home.require()
        self.config = home.config()
        self.store = DataStore(home.store_dir)
        self.jobs = JobStore(home.jobs_dir)
        self.ledger = JobLedger(home.jobs_dir / "_ledger.json")
        self.audit = AuditLog(home.audit_log)
        self.gate = ReleaseGate(self.audit)
        self._token = home.token()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._submit_lock = threading.Lock()
        self.model: LoadedModel | OpenAIModel | None = None
        self.model_hash: str | None = None
        self.model_error: str | None = None
        self.prefetcher: FramePrefetcher | None = None  # frame workers ([model] frame_workers)
        self.pool: DevicePool | None = None  # model copies on several devices ([model] devices)
        if load:
            self._load_model()
        for job in self.jobs.all():  # resume what a previous engine left unfinished
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                self.jobs.update(job.job_id, state=JobState.QUEUED, progress=0.0)
                self._queue.put(job.job_id)
        self._worker = threading.Thread(target=self._work, name="site-engine-worker", daemon=True)

    def _load_model(self) -> None:
        model_dir = self.config.model_dir
        try:
            if model_dir is None:
                raise ModelError(f"{self.home.config_file}: [model] dir is not set")
            self.model_hash = manifest_hash(model_dir, cache_dir=self.home.logs_dir)
            if self.config.backend is ModelBackend.OPENAI:  # the site's server answers; dir is the weights it serves
                self.model = served_model(self.config, model_dir)
                log.info("model served at %s (manifest %s)", self.config.endpoint, self.model_hash[:16])
                return
            self.model = load_model(model_dir, device=self.config.device)
            self.prefetcher, self.pool = start_helpers(model_dir, self.config.devices, self.config.frame_workers)
            log.info("model loaded (manifest %s)", self.model_hash[:16])
        except SurgFedError as exc:
            self.model_error = str(exc)
            log.error("model not loaded: %s", exc)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    # -- requests from the ClientApp -------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; every outgoing reply passes the release gate. Errors leave as a code only."""
        if not hmac.compare_digest(str(request.get("token", "")), self._token):
            self.audit.append("refused-request", reason="bad engine token")
            return {"ok": False, "error": "engine token rejected"}
        try:
            op = Op(request.get("op"))
            records = request.get("records") or {}
            check_records(op, records, direction="request")
            values = records.get("job", {}).get("values", {})
            job_id = _cap(values.get("job-id"))
            self.audit.append("request", op=op.value, job_id=job_id, protocol_hash=_cap(values.get("protocol-hash")))
            reply = self._dispatch(op, values, records)
            return {"ok": True, "records": self.gate.release(op, reply, job_id=job_id)}
        except (ValueError, SurgFedError) as exc:
            log.info("refused a request: %s", str(exc)[:500])
            self.audit.append("refused-request", op=_cap(request.get("op"), 32), reason=_cap(exc, 500))
            return {"ok": False, "error": reason_for(exc).value if isinstance(exc, SurgFedError) else "bad-request"}

    def _dispatch(self, op: Op, values: dict[str, Any], records: WireRecords) -> WireRecords:
        if op is Op.HELLO:
            return hello_reply(__version__, self.config.name)
        job_id = check_job_id(values["job-id"])
        if op is Op.SUBMIT:
            with self._submit_lock:
                return _job_record(self._submit(job_id, values, records))
        job = self.jobs.get(job_id)
        if job is None:
            raise ContractError(f"unknown job {job_id!r}")
        if op is Op.FETCH and job.state is JobState.DONE and job.payload is not None:
            return job.payload
        return _job_record(job)

    def _submit(self, job_id: str, values: dict[str, Any], records: WireRecords) -> Job:
        existing = self.jobs.get(job_id)
        if existing is not None:  # a restarted hub re-submits: answer with the job as it stands
            return existing
        study, protocol_hash = str(values["study"])[:64], str(values["protocol-hash"])[:64]
        job = Job(job_id, JobKind(values["kind"]), study, values["round"], protocol_hash)
        try:
            check_contract_version(values.get(CONTRACT_VERSION_KEY), "the hub")
            # An unknown protocol is refused by its hash; its text is kept, unparsed, for the operator's review.
            if "protocol" in values and not is_approved(self.home.approved_dir, job.protocol_hash):
                kept = keep_pending(self.home.approved_dir, job.protocol_hash, values["protocol"])
                self.audit.append("protocol-request", protocol_hash=job.protocol_hash, kept=kept)
            snapshot = store_snapshot(self.store)
            admitted = admit(
                self.home, self.config, self.jobs, self.ledger, job, snapshot, values=values, records=records
            )
            if job.kind is JobKind.TRAIN:
                protocol = admitted.protocol
                privacy = privacy_context(self.home, self.config, protocol, job.round, self.audit)
                check_train(protocol, self.config.name, self.store, privacy)
            if "adapter" in records:
                self.jobs.reserve(sum(len(v.get("b64", "")) for v in records["adapter"]["values"].values()))
            save_incoming_adapter(self.jobs.work_dir(job.job_id), records)
            self.ledger.record(
                question=admitted.question,
                job_id=job.job_id,
                adapter_key=admitted.adapter_key,
                adapter=job.adapter,
                study=admitted.protocol.study_id,
                snap=snapshot,
            )
        except (JobRefused, SurgFedError) as exc:
            job.state, job.detail, job.reason = JobState.REFUSED, str(exc)[:2000], reason_for(exc).value
            # The reason code only: the detail (which may name files) stays in the job folder.
            log.info("job refused: %s (%s round %s of study %s)", job.reason, job.kind.value, job.round, job.study)
            self.audit.append("refused", job_id=job.job_id, protocol_hash=job.protocol_hash, reason=job.reason)
            self.jobs.save(job)
            return job
        self.audit.append(
            "accepted", job_id=job.job_id, protocol_hash=job.protocol_hash, snapshot=job.snapshot, adapter=job.adapter
        )
        self.jobs.save(job)
        self._queue.put(job.job_id)
        log.info("job received: %s round %s of study %s", job.kind.value, job.round, job.study)
        return job

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            job = self.jobs.update(job_id, state=JobState.RUNNING)
            try:
                payload = self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not kill the engine
                reason = reason_for(exc)
                if reason is Reason.INTERNAL_ERROR:
                    log.exception("job %s crashed", job_id)
                else:
                    log.error(
                        "job failed: %s (%s round %s of study %s)", reason.value, job.kind.value, job.round, job.study
                    )
                detail = f"{type(exc).__name__}: {exc}"[:2000]
                self.jobs.update(job_id, state=JobState.FAILED, detail=detail, reason=reason.value)
                job_failed(self.audit, job_id, reason)
                continue
            manual = self.config.release is ReleaseMode.MANUAL
            state = JobState.AWAITING_APPROVAL if manual else JobState.DONE
            self.jobs.update(job_id, state=state, payload=payload, progress=1.0)
            self.audit.append("job-finished", job_id=job_id, state=state.value)
            log.info("job finished: %s round %s of study %s", job.kind.value, job.round, job.study)
            if manual:
                log.info("a result awaits approval: `site_node releases list`, then `releases show` / `approve`")
        for helper in (self.prefetcher, self.pool):
            if helper is not None:
                helper.close()

    def _run(self, job: Job) -> WireRecords:
        protocol: StudyProtocol = approved(self.home.approved_dir, job.protocol_hash)
        if self.model is None:
            raise ModelError(self.model_error or "no model loaded")
        if self.model_hash != protocol.model_sha256:
            raise ModelError(
                f"model manifest {self.model_hash[:16] if self.model_hash else None}... does not match "
                f"the protocol's {protocol.model_sha256[:16]}..."
            )

        def progress(task: str, done: int, total: int) -> None:  # counts stay in the job file, only 0.1 steps leave
            self.jobs.update(job.job_id, progress=done / max(total, 1), detail=f"{task}: {done}/{total} frames")

        work_dir = self.jobs.work_dir(job.job_id)
        if isinstance(self.model, OpenAIModel):
            if job.kind is JobKind.TRAIN or load_incoming_adapter(work_dir) is not None:
                raise ModelError(
                    '[model] backend = "openai" evaluates the served model only: fine-tuning, and evaluating '
                    'with an adapter from the hub, need backend = "hf"'
                )
            outcomes = evaluate_protocol(
                self.model,
                self.store,
                protocol,
                batch_size=self.config.batch_size,  # requests in flight at once
                predictions=work_dir / "predictions.jsonl",
                progress=progress,
            )
        elif job.kind is JobKind.TRAIN:
            privacy = privacy_context(self.home, self.config, protocol, job.round, self.audit)
            return run_train(self.model, self.store, protocol, job.job_id, work_dir, privacy, progress=progress)
        else:
            with model_for_job(self.model, protocol, work_dir) as model:
                outcomes = evaluate_protocol(
                    model,
                    self.store,
                    protocol,
                    batch_size=self.config.batch_size,
                    predictions=work_dir / "predictions.jsonl",  # checkpointed per video: a restart resumes
                    progress=progress,
                    prefetcher=self.prefetcher,
                    runner=self.pool if model is self.model else None,  # the copies carry no adapter
                )
        estimates = {t: o.estimates for t, o in outcomes.items()}
        floor = self.config.policy.cell_floor(protocol.privacy.min_videos)  # the protocol may raise it, never lower
        return evaluation_payload(job.job_id, protocol, estimates, min_videos=floor)
