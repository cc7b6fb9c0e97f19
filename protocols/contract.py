"""The message contract: per message type, the records, keys and value kinds allowed on the wire."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from protocols.arrays import check_wire
from protocols.errors import ContractError


class Op(str, Enum):
    """Message types between hub and site (Flower `query.<op>` messages)."""

    HELLO = "hello"  # software version, nothing about data
    SUBMIT = "submit"  # start a job (evaluation or training round)
    STATUS = "status"  # short poll of a job's state
    FETCH = "fetch"  # the released result of a finished job


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  # finished, waiting for the local data owner
    DONE = "done"  # released
    FAILED = "failed"  # the site could not run it (reason in detail)
    REFUSED = "refused"  # the site's policy refused it (unapproved protocol, per-frame outputs ...)
    REJECTED = "rejected"  # the local data owner rejected the release

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.REFUSED, JobState.REJECTED)


class JobKind(str, Enum):
    EVALUATE = "evaluate"
    TRAIN = "train"


class RecordKind(str, Enum):
    CONFIG = "config"
    METRIC = "metric"
    ARRAY = "array"


class ValueKind(str, Enum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    FLAG = "flag"  # 0 or 1 (Flower's MetricRecord has no booleans)
    ARRAY = "array"  # a numpy array in wire form (protocols.arrays)


@dataclass(frozen=True)
class KeySpec:
    kind: ValueKind
    required: bool = True


@dataclass(frozen=True)
class RecordSpec:
    """A record allowed in a message; `name` is a regex matched against the record's full name."""

    name: str
    kind: RecordKind
    keys: dict[str, KeySpec]
    required: bool = True


def _spec(*entries: tuple[str, ValueKind, bool]) -> dict[str, KeySpec]:
    return {k: KeySpec(v, r) for k, v, r in entries}


S, I, F, B, A = ValueKind.STR, ValueKind.INT, ValueKind.FLOAT, ValueKind.FLAG, ValueKind.ARRAY

JOB_RECORD = RecordSpec(
    "job",
    RecordKind.CONFIG,
    _spec(("job-id", S, True), ("state", S, True), ("detail", S, False), ("progress", F, False)),
)
META_RECORD = RecordSpec("meta", RecordKind.CONFIG, _spec(("software-version", S, True), ("protocol-hash", S, True)))
# One record per task and metric: exactly these seven numbers, no more. Suppressed cells carry only the flag.
METRIC_KEYS = ("estimate", "ci_low", "ci_high", "n_videos", "n_frames", "parse_fail_rate", "suppressed")
METRIC_RECORD = RecordSpec(
    r"metric\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*",
    RecordKind.METRIC,
    _spec(
        ("estimate", F, False),
        ("ci_low", F, False),
        ("ci_high", F, False),
        ("n_videos", I, False),
        ("n_frames", I, False),
        ("parse_fail_rate", F, False),
        ("suppressed", B, True),
    ),
    required=False,
)

# A LoRA adapter (never base weights): one flat array plus the metadata that names its tensors and wire dtype.
ADAPTER_RECORDS = (
    RecordSpec("adapter", RecordKind.ARRAY, _spec(("adapter", A, True)), required=False),
    RecordSpec(
        "adapter-meta",
        RecordKind.CONFIG,
        _spec(("encoding", S, True), ("wire-dtype", S, True), ("tensors", S, True)),
        required=False,
    ),
)
# A train reply adds the number of examples (FedAvg weight) and, under DP, the site's epsilon so far.
TRAIN_RECORD = RecordSpec(
    "train", RecordKind.METRIC, _spec(("num-examples", I, True), ("epsilon", F, False)), required=False
)

# Every released reply carries the site's audit-log anchor (the entry that logged it); the hub keeps them.
ANCHOR_RECORD = RecordSpec("audit", RecordKind.CONFIG, _spec(("seq", I, True), ("head", S, True)), required=False)

# What a site may send, per message type.
REPLIES: dict[Op, tuple[RecordSpec, ...]] = {
    Op.HELLO: (RecordSpec("site", RecordKind.CONFIG, _spec(("software-version", S, True), ("site-name", S, False))),),
    Op.SUBMIT: (JOB_RECORD,),
    Op.STATUS: (JOB_RECORD,),
    Op.FETCH: (
        JOB_RECORD,
        RecordSpec(META_RECORD.name, META_RECORD.kind, META_RECORD.keys, required=False),
        METRIC_RECORD,
        *ADAPTER_RECORDS,
        TRAIN_RECORD,
    ),
}

# What the hub may ask, per message type.
REQUESTS: dict[Op, tuple[RecordSpec, ...]] = {
    Op.HELLO: (),
    Op.SUBMIT: (
        RecordSpec(
            "job",
            RecordKind.CONFIG,
            # The protocol text travels so that a site can say why it refuses one it never approved.
            _spec(
                ("job-id", S, True),
                ("kind", S, True),
                ("study", S, True),
                ("round", I, True),
                ("protocol-hash", S, True),
                ("protocol", S, False),
            ),
        ),
        *ADAPTER_RECORDS,  # the global adapter to train from or evaluate with
    ),
    Op.STATUS: (RecordSpec("job", RecordKind.CONFIG, _spec(("job-id", S, True))),),
    Op.FETCH: (RecordSpec("job", RecordKind.CONFIG, _spec(("job-id", S, True))),),
}

# Wire form used between the site engine and the ClientApp: {record name: {"kind": ..., "values": {...}}}.
WireRecords = dict[str, dict[str, Any]]


def _check_value(where: str, value: Any, kind: ValueKind) -> None:
    if kind is ValueKind.ARRAY:
        check_wire(where, value)
        return
    ok = {
        ValueKind.STR: isinstance(value, str) and len(value) <= 65536,
        ValueKind.INT: isinstance(value, int) and not isinstance(value, bool),
        ValueKind.FLOAT: isinstance(value, float) and math.isfinite(value),
        ValueKind.FLAG: isinstance(value, int) and not isinstance(value, bool) and value in (0, 1),
    }[kind]
    if not ok:
        raise ContractError(f"{where}: expected {kind.value}, got {type(value).__name__} {str(value)[:80]!r}")


def _match(name: str, specs: tuple[RecordSpec, ...]) -> RecordSpec:
    for spec in specs:
        if re.fullmatch(spec.name, name):
            return spec
    raise ContractError(f"record {name!r} is not allowed here; allowed: {[s.name for s in specs]}")


def check_records(op: Op, records: WireRecords, *, direction: str = "reply") -> None:
    """Raise ContractError unless `records` is exactly what the contract allows for `op`."""
    specs = REPLIES[op] + (ANCHOR_RECORD,) if direction == "reply" else REQUESTS[op]
    if not isinstance(records, dict):
        raise ContractError(f"{op.value} {direction}: records must be a mapping, got {type(records).__name__}")
    seen: set[str] = set()
    for name, record in records.items():
        spec = _match(name, specs)
        seen.add(spec.name)
        if (
            not isinstance(record, dict)
            or record.get("kind") != spec.kind.value
            or not isinstance(record.get("values"), dict)
        ):
            raise ContractError(f"{op.value} {direction}: record {name!r} must be a {spec.kind.value} record")
        values: dict[str, Any] = record["values"]
        extra = sorted(set(values) - set(spec.keys))
        if extra:
            raise ContractError(f"{op.value} {direction}: record {name!r} has keys not in the contract: {extra}")
        for key, key_spec in spec.keys.items():
            if key not in values:
                if key_spec.required:
                    raise ContractError(f"{op.value} {direction}: record {name!r} lacks required key {key!r}")
                continue
            _check_value(f"{op.value} {direction}: {name}.{key}", values[key], key_spec.kind)
    missing = [s.name for s in specs if s.required and s.name not in seen]
    if missing:
        raise ContractError(f"{op.value} {direction}: missing records {missing}")


def metric_record_name(task: str, metric: str) -> str:
    return f"metric.{task}.{metric}"


def parse_metric_record_name(name: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"metric\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)", name)
    return (match.group(1), match.group(2)) if match else None
