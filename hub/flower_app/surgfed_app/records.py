"""Convert between the contract's wire records and Flower's RecordDict (used by both apps)."""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from protocols.contract import WireRecords


def to_recorddict(records: WireRecords) -> RecordDict:
    out = RecordDict()
    for name, record in records.items():
        kind, values = record["kind"], record["values"]
        if kind == "config":
            out[name] = ConfigRecord(dict(values))
        elif kind == "metric":
            out[name] = MetricRecord(dict(values))
        else:
            raise ValueError(f"record {name!r}: kind {kind!r} cannot travel in this message")
    return out


def from_recorddict(content: RecordDict) -> WireRecords:
    records: WireRecords = {}
    for name, record in content.items():
        kind = "config" if isinstance(record, ConfigRecord) else "metric" if isinstance(record, MetricRecord) else "array"
        values: dict[str, Any] = dict(record) if kind != "array" else {}
        records[name] = {"kind": kind, "values": values}
    return records
