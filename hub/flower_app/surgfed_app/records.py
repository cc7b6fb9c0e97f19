"""Convert between the contract's wire records and Flower's RecordDict (used by both apps)."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from protocols.arrays import from_wire, to_wire
from protocols.contract import RecordKind, WireRecords
from protocols.records import array_record, config_record, metric_record


def to_recorddict(records: WireRecords) -> RecordDict:
    out = RecordDict()
    for name, record in records.items():
        kind, values = record["kind"], record["values"]
        if kind == RecordKind.CONFIG.value:
            out[name] = ConfigRecord(dict(values))
        elif kind == RecordKind.METRIC.value:
            out[name] = MetricRecord(dict(values))
        elif kind == RecordKind.ARRAY.value:
            out[name] = ArrayRecord({k: Array(from_wire(v)) for k, v in values.items()})
        else:
            raise ValueError(f"record {name!r}: unknown kind {kind!r}")
    return out


def from_recorddict(content: RecordDict) -> WireRecords:
    records: WireRecords = {}
    for name, record in content.items():
        wire: dict[str, Any]
        if isinstance(record, ArrayRecord):
            wire = array_record({k: to_wire(a.numpy()) for k, a in record.items()})
        elif isinstance(record, ConfigRecord):
            wire = config_record(record)
        else:
            wire = metric_record(record)
        records[name] = wire
    return records
