"""Convert between the contract's wire records and Flower's RecordDict (used by both apps)."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from protocols.arrays import from_wire, to_wire
from protocols.contract import WireRecords
from protocols.text import clean_value, strip_controls


def to_recorddict(records: WireRecords) -> RecordDict:
    out = RecordDict()
    for name, record in records.items():
        kind, values = record["kind"], record["values"]
        if kind == "config":
            out[name] = ConfigRecord(dict(values))
        elif kind == "metric":
            out[name] = MetricRecord(dict(values))
        elif kind == "array":
            out[name] = ArrayRecord({k: Array(from_wire(v)) for k, v in values.items()})
        else:
            raise ValueError(f"record {name!r}: unknown kind {kind!r}")
    return out


def from_recorddict(content: RecordDict, *, from_site: bool = False) -> WireRecords:
    """Decode a message. A site's reply (`from_site`) has every name and string stripped of control characters
    here, at the hub's boundary; the hub's requests keep theirs (a protocol's YAML needs its newlines)."""
    records: WireRecords = {}
    clean = clean_value if from_site else (lambda v: v)
    name_of = strip_controls if from_site else (lambda n: n)
    for name, record in content.items():
        values: dict[str, Any]
        if isinstance(record, ArrayRecord):
            kind, values = "array", {k: to_wire(a.numpy()) for k, a in record.items()}
        else:
            kind = "config" if isinstance(record, ConfigRecord) else "metric"
            values = {name_of(k): clean(v) for k, v in record.items()}
        records[name_of(name)] = {"kind": kind, "values": values}
    return records
