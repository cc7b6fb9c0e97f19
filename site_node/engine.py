"""The site engine: owns the loaded model, the data store, the jobs and the release gate for one `serve`."""

from __future__ import annotations

import hmac
import logging
import queue
import threading
from typing import Any

from protocols import __version__
from protocols.contract import JobKind, JobState, Op, WireRecords, check_records
from protocols.errors import ContractError, ModelError, ProtocolError, SurgFedError
from protocols.model_ref import manifest_hash
from protocols.study import OutputLevel, StudyProtocol
from site_node.approvals import approved, is_approved, refusal_reason
from site_node.audit import AuditLog
from site_node.evaluation import evaluate_protocol
from site_node.finetune_jobs import check_train, model_for_job, privacy_context, run_train, save_incoming_adapter
from site_node.home import ReleaseMode, SiteHome
from site_node.jobs import Job, JobStore
from site_node.model.devices import DevicePool, start_helpers
from site_node.model.loading import LoadedModel, load_model
from site_node.model.prefetch import FramePrefetcher
from site_node.release_gate import ReleaseGate, evaluation_payload
from site_node.store import DataStore

log = logging.getLogger(__name__)


def _job_record(job: Job) -> WireRecords:
    values: dict[str, Any] = {"job-id": job.job_id, "state": job.state.value, "progress": float(job.progress)}
    if job.detail:
        values["detail"] = job.detail[:1000]
    return {"job": {"kind": "config", "values": values}}


class SiteEngine:
    """Loads the model once; jobs run one at a time on a worker thread; requests are answered at once."""

    def __init__(self, home: SiteHome, *, load: bool = True) -> None:
        self.home = home.require()
        self.config = home.config()
        self.store = DataStore(home.store_dir)
        self.jobs = JobStore(home.jobs_dir)
        self.audit = AuditLog(home.audit_log)
        self.gate = ReleaseGate(self.audit)
        self._token = home.token()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.model: LoadedModel | None = None
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
            self.model = load_model(model_dir, device=self.config.device)
            self.prefetcher, self.pool = start_helpers(model_dir, self.config.devices, self.config.frame_workers)
            log.info("model loaded from %s (manifest %s)", model_dir, self.model_hash[:16])
        except SurgFedError as exc:
            self.model_error = str(exc)
            log.error("model not loaded: %s", exc)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    # -- requests from the ClientApp -------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; every outgoing reply passes the release gate."""
        if not hmac.compare_digest(str(request.get("token", "")), self._token):
            self.audit.append("refused-request", reason="bad engine token")
            return {"ok": False, "error": "engine token rejected"}
        try:
            op = Op(request.get("op"))
            records = request.get("records") or {}
            check_records(op, records, direction="request")
            values = records.get("job", {}).get("values", {})
            self.audit.append(
                "request", op=op.value, job_id=values.get("job-id"), protocol_hash=values.get("protocol-hash")
            )
            reply = self._dispatch(op, values, records)
            return {"ok": True, "records": self.gate.release(op, reply, job_id=values.get("job-id"))}
        except (ValueError, SurgFedError) as exc:
            self.audit.append("refused-request", op=str(request.get("op"))[:32], reason=str(exc)[:500])
            return {"ok": False, "error": str(exc)}

    def _dispatch(self, op: Op, values: dict[str, Any], records: WireRecords) -> WireRecords:
        if op is Op.HELLO:
            return {
                "site": {"kind": "config", "values": {"software-version": __version__, "site-name": self.config.name}}
            }
        if op is Op.SUBMIT:
            return _job_record(self._submit(values, records))
        job = self.jobs.get(values["job-id"])
        if job is None:
            raise ContractError(f"unknown job {values['job-id']!r}")
        if op is Op.FETCH and job.state is JobState.DONE and job.payload is not None:
            return job.payload
        return _job_record(job)

    def _submit(self, values: dict[str, Any], records: WireRecords) -> Job:
        existing = self.jobs.get(values["job-id"])
        if existing is not None:  # a restarted hub re-submits: answer with the job as it stands
            return existing
        job = Job(values["job-id"], JobKind(values["kind"]), values["study"], values["round"], values["protocol-hash"])
        try:
            if not is_approved(self.home.approved_dir, job.protocol_hash):
                raise ProtocolError(refusal_reason(job.protocol_hash, values.get("protocol")))
            protocol = approved(self.home.approved_dir, job.protocol_hash)
            if protocol.privacy.outputs is not OutputLevel.AGGREGATE:
                raise ContractError(
                    f"protocol asks for {protocol.privacy.outputs.value} outputs; only aggregates leave"
                )
            if job.kind is JobKind.TRAIN:
                check_train(
                    protocol, self.config.name, self.store, privacy_context(self.home, self.config, protocol, job.round)
                )
            save_incoming_adapter(self.jobs.work_dir(job.job_id), records)
        except SurgFedError as exc:
            job.state, job.detail = JobState.REFUSED, str(exc)
            self.audit.append("refused", job_id=job.job_id, protocol_hash=job.protocol_hash, reason=str(exc))
            self.jobs.save(job)
            return job
        self.jobs.save(job)
        self._queue.put(job.job_id)
        return job

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            job = self.jobs.update(job_id, state=JobState.RUNNING)
            try:
                payload = self._run(job)
            except SurgFedError as exc:
                log.error("job %s failed: %s", job_id, exc)
                self.jobs.update(job_id, state=JobState.FAILED, detail=str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not kill the engine
                log.exception("job %s crashed", job_id)
                self.jobs.update(job_id, state=JobState.FAILED, detail=f"internal error: {type(exc).__name__}: {exc}")
                continue
            manual = self.config.release is ReleaseMode.MANUAL
            state = JobState.AWAITING_APPROVAL if manual else JobState.DONE
            self.jobs.update(job_id, state=state, payload=payload, progress=1.0)
            self.audit.append("job-finished", job_id=job_id, state=state.value)
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

        def progress(task: str, done: int, total: int) -> None:
            self.jobs.update(job.job_id, progress=done / max(total, 1), detail=f"{task}: {done}/{total} frames")

        work_dir = self.jobs.work_dir(job.job_id)
        if job.kind is JobKind.TRAIN:
            privacy = privacy_context(self.home, self.config, protocol, job.round)
            return run_train(
                self.model,
                self.store,
                protocol,
                job.job_id,
                work_dir,
                privacy,
                seed=protocol.bootstrap_seed + job.round,
                progress=progress,
            )
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
        return evaluation_payload(job.job_id, protocol, {t: o.estimates for t, o in outcomes.items()})
