"""The message contract: per message type, the records, keys and value kinds allowed on the wire."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from protocols.arrays import check_wire
from protocols.errors import ContractError, ContractVersionError
from protocols.grpo import RewardKind

# The version of this contract. Hub and site refuse each other when it differs (a hub pooling with se_pooling must
# not read a site that never sends it as if it did). History: 1 the seven metric numbers; 2 adds se_pooling,
# pooling_scale and undefined_share to each metric record, the version itself to hello, submit and fetch, and
# job states as fixed vocabularies (coarse progress, reason codes; no free-text detail).
CONTRACT_VERSION = 2
CONTRACT_VERSION_KEY = "contract-version"


def check_contract_version(received: object, peer: str) -> None:
    """Raise ContractError unless the peer speaks this contract version (absent means version 1)."""
    version = 1 if received is None else received
    if version != CONTRACT_VERSION:
        raise ContractVersionError(
            f"{peer} speaks message contract version {version!r}, this side speaks {CONTRACT_VERSION}: "
            "upgrade the older side so both run the same surgfed contract"
        )


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
    FAILED = "failed"  # the site could not run it (a Reason code leaves; the text stays at the site)
    REFUSED = "refused"  # the site's policy refused it (unapproved protocol, question already answered ...)
    REJECTED = "rejected"  # the local data owner rejected the release

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.REFUSED, JobState.REJECTED)


class Reason(str, Enum):
    """Why a job failed or was refused: the only explanation that leaves a site (the full text stays there)."""

    PROTOCOL_NOT_APPROVED = "protocol-not-approved"
    PROTOCOL_MISMATCH = "protocol-mismatch"  # study id, round or kind outside what the approved protocol plans
    NO_USABLE_DATA = "no-usable-data"
    PRIVACY_BUDGET = "privacy-budget"
    MODEL_MISMATCH = "model-mismatch"
    ADAPTER_MISMATCH = "adapter-mismatch"  # not the global adapter of the previous round, or none expected
    POLICY = "policy"  # the site policy (site.toml [policy]) refuses it
    ALREADY_ANSWERED = "already-answered"  # each (protocol, kind, round) is answered once
    SNAPSHOT_CHANGED = "snapshot-changed"  # the store changed since the study's first job
    STORAGE_FULL = "storage-full"
    REJECTED_BY_OWNER = "rejected-by-owner"
    BAD_REQUEST = "bad-request"
    CONTRACT_VERSION = "contract-version"  # the hub speaks another version of the message contract
    INTERNAL_ERROR = "internal-error"


# Progress leaves as a fraction in steps of 0.1, never as counts.
PROGRESS_STEPS = tuple(round(i / 10, 1) for i in range(11))
# Job ids: a strict alphabet without dots, so an id is never a file name with an extension.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def job_id_for(*parts: object) -> str:
    """A job id in the strict alphabet from the hub's launch id, round, kind and site name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", "-".join(str(p) for p in parts))[:128]


def coarse_progress(fraction: float) -> float:
    return round(min(1.0, max(0.0, float(fraction))) * 10) / 10 if math.isfinite(fraction) else 0.0


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
    choices: tuple[Any, ...] | None = None  # a fixed vocabulary: nothing else may travel in this key


@dataclass(frozen=True)
class RecordSpec:
    """A record allowed in a message; `name` is a regex matched against the record's full name."""

    name: str
    kind: RecordKind
    keys: dict[str, KeySpec]
    required: bool = True


def _spec(*entries: tuple[str, ValueKind, bool]) -> dict[str, KeySpec]:
    return {k: KeySpec(v, r) for k, v, r in entries}


def _vocab(values: type[Enum]) -> tuple[str, ...]:
    return tuple(str(v.value) for v in values)


S, I, F, B, A = ValueKind.STR, ValueKind.INT, ValueKind.FLOAT, ValueKind.FLAG, ValueKind.ARRAY  # noqa: E741

# A job's state leaves as words from fixed lists only: no free text, no counts, no paths.
JOB_RECORD = RecordSpec(
    "job",
    RecordKind.CONFIG,
    {
        "job-id": KeySpec(S),
        "state": KeySpec(S, choices=_vocab(JobState)),
        "progress": KeySpec(F, False, PROGRESS_STEPS),
        "reason": KeySpec(S, False, _vocab(Reason)),
    },
)
META_RECORD = RecordSpec(
    "meta",
    RecordKind.CONFIG,
    _spec(("software-version", S, True), ("protocol-hash", S, True), (CONTRACT_VERSION_KEY, I, False)),
)
# One record per task and metric: exactly these numbers, no more. Suppressed cells carry only the flag.
# se_pooling: the SE on the pooling scale from the bootstrap; pooling_scale: protocols.results.PoolingScale code.
METRIC_KEYS = (
    "estimate",
    "ci_low",
    "ci_high",
    "n_videos",
    "n_frames",
    "parse_fail_rate",
    "suppressed",
    "se_pooling",
    "pooling_scale",
    "undefined_share",
)
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
        ("se_pooling", F, False),
        ("pooling_scale", I, False),
        ("undefined_share", F, False),
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

# A GRPO round adds aggregate reward statistics (never completions or per-frame rewards); a round that sampled
# fewer videos than the cell floor sends only the flag. `reward-first` / `reward-last`: the mean total reward of
# the first and the second half of the round's steps, each sent only when its own steps sampled the floor's videos.
GRPO_WINDOW_KEYS = ("reward-first", "reward-last")
GRPO_STAT_KEYS = (
    "reward-mean",
    *GRPO_WINDOW_KEYS,
    *(f"reward-{kind.value}" for kind in RewardKind),
    "zero-spread-share",
    "kl-mean",
    "clip-fraction",
)
GRPO_RECORD = RecordSpec(
    "grpo",
    RecordKind.METRIC,
    _spec(*((key, F, False) for key in GRPO_STAT_KEYS), ("suppressed", B, True)),
    required=False,
)

# Every released reply carries the site's audit-log anchor (the entry that logged it); the hub keeps them.
ANCHOR_RECORD = RecordSpec("audit", RecordKind.CONFIG, _spec(("seq", I, True), ("head", S, True)), required=False)

# What a site may send, per message type.
REPLIES: dict[Op, tuple[RecordSpec, ...]] = {
    Op.HELLO: (
        RecordSpec(
            "site",
            RecordKind.CONFIG,
            _spec(("software-version", S, True), ("site-name", S, False), (CONTRACT_VERSION_KEY, I, False)),
        ),
    ),
    Op.SUBMIT: (JOB_RECORD,),
    Op.STATUS: (JOB_RECORD,),
    Op.FETCH: (
        JOB_RECORD,
        RecordSpec(META_RECORD.name, META_RECORD.kind, META_RECORD.keys, required=False),
        METRIC_RECORD,
        *ADAPTER_RECORDS,
        TRAIN_RECORD,
        GRPO_RECORD,
    ),
}

# What the hub may ask, per message type.
REQUESTS: dict[Op, tuple[RecordSpec, ...]] = {
    Op.HELLO: (),
    Op.SUBMIT: (
        RecordSpec(
            "job",
            RecordKind.CONFIG,
            # The protocol text travels so that a site can keep an unknown one for its operator to review;
            # adapter-sha256 names the global adapter the job carries (adapter_digest).
            _spec(
                ("job-id", S, True),
                ("kind", S, True),
                ("study", S, True),
                ("round", I, True),
                ("protocol-hash", S, True),
                ("protocol", S, False),
                (CONTRACT_VERSION_KEY, I, False),
                ("adapter-sha256", S, False),
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
    raise ContractError(f"record {name[:60]!r} is not allowed here; allowed: {[s.name for s in specs]}")


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
            shown = [str(k)[:40] for k in extra[:5]]
            raise ContractError(f"{op.value} {direction}: record {name!r} has keys not in the contract: {shown}")
        for key, key_spec in spec.keys.items():
            if key not in values:
                if key_spec.required:
                    raise ContractError(f"{op.value} {direction}: record {name!r} lacks required key {key!r}")
                continue
            _check_value(f"{op.value} {direction}: {name}.{key}", values[key], key_spec.kind)
            if key_spec.choices is not None and values[key] not in key_spec.choices:
                raise ContractError(
                    f"{op.value} {direction}: {name}.{key} {str(values[key])[:40]!r} is not in its list"
                )
    missing = [s.name for s in specs if s.required and s.name not in seen]
    if missing:
        raise ContractError(f"{op.value} {direction}: missing records {missing}")
