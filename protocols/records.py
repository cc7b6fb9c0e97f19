"""Builders of the records that cross the wire, named as the message contract (protocols.contract) lists them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from protocols.contract import (
    CONTRACT_VERSION,
    CONTRACT_VERSION_KEY,
    JobKind,
    JobState,
    Reason,
    RecordKind,
    WireRecords,
    coarse_progress,
)


def adapter_digest(records: WireRecords) -> str:
    """The global adapter a SUBMIT carries, as one hash ("none" without one); hub and site compute it alike."""
    if "adapter" not in records:
        return "none"
    body = {name: records[name]["values"] for name in ("adapter", "adapter-meta") if name in records}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def metric_record_name(task: str, metric: str) -> str:
    return f"metric.{task}.{metric}"


def parse_metric_record_name(name: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"metric\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)", name)
    return (match.group(1), match.group(2)) if match else None


# -- builders: the one place the wire form {"kind": ..., "values": {...}} is spelled -------------------------------


def wire_record(kind: RecordKind, values: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": kind.value, "values": dict(values)}


def config_record(values: Mapping[str, Any]) -> dict[str, Any]:
    return wire_record(RecordKind.CONFIG, values)


def metric_record(values: Mapping[str, Any]) -> dict[str, Any]:
    return wire_record(RecordKind.METRIC, values)


def array_record(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """`arrays` already in wire form (protocols.arrays.to_wire)."""
    return wire_record(RecordKind.ARRAY, arrays)


def job_request(job_id: str) -> WireRecords:
    """A status or fetch request: only the job id."""
    return {"job": config_record({"job-id": job_id})}


def submit_request(
    job_id: str,
    kind: JobKind,
    study: str,
    round_: int,
    protocol_hash: str,
    protocol_text: str | None = None,
    adapter_sha256: str | None = None,
) -> WireRecords:
    values: dict[str, Any] = {
        "job-id": job_id,
        "kind": kind.value,
        "study": study,
        "round": round_,
        "protocol-hash": protocol_hash,
        CONTRACT_VERSION_KEY: CONTRACT_VERSION,
    }
    if protocol_text is not None:
        values["protocol"] = protocol_text
    if adapter_sha256 is not None:
        values["adapter-sha256"] = adapter_sha256  # the one global adapter of this round (in the same request)
    return {"job": config_record(values)}


def job_reply(
    job_id: str, state: JobState, *, progress: float | None = None, reason: Reason | None = None
) -> WireRecords:
    """A site's answer about one job (submit, status, and the head of every fetch): fixed vocabularies only."""
    values: dict[str, Any] = {"job-id": job_id, "state": state.value}
    if progress is not None:
        values["progress"] = coarse_progress(progress)
    if reason is not None:
        values["reason"] = reason.value
    return {"job": config_record(values)}


def result_meta(software_version: str, protocol_hash: str) -> WireRecords:
    """What a released result was computed with; the hub refuses a result for another protocol."""
    values = {
        "software-version": software_version,
        "protocol-hash": protocol_hash,
        CONTRACT_VERSION_KEY: CONTRACT_VERSION,
    }
    return {"meta": config_record(values)}


def hello_reply(software_version: str, site_name: str) -> WireRecords:
    values = {"software-version": software_version, "site-name": site_name, CONTRACT_VERSION_KEY: CONTRACT_VERSION}
    return {"site": config_record(values)}


def adapter_records(arrays: Mapping[str, Any], meta: Mapping[str, str]) -> WireRecords:
    """A LoRA adapter: wire-form arrays and the metadata that names its tensors (protocols.adapters)."""
    return {"adapter": array_record(arrays), "adapter-meta": config_record(meta)}


def train_record(num_examples: int, epsilon: float | None = None) -> WireRecords:
    values: dict[str, Any] = {"num-examples": int(num_examples)}
    if epsilon is not None:
        values["epsilon"] = float(epsilon)
    return {"train": metric_record(values)}
