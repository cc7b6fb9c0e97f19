"""Convert between the contract's wire records and Flower's RecordDict (used by both apps)."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from protocols.arrays import from_wire, to_wire
from protocols.contract import RecordKind, WireRecords
from protocols.records import array_record, config_record, metric_record
from protocols.text import clean_value, strip_controls


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


def from_recorddict(content: RecordDict, *, from_site: bool = False) -> WireRecords:
    """Decode a message. A site's reply (`from_site`) has every name and string stripped of control characters
    here, at the hub's boundary; the hub's requests keep theirs (a protocol's YAML needs its newlines)."""
    records: WireRecords = {}
    clean = clean_value if from_site else (lambda v: v)
    name_of = strip_controls if from_site else (lambda n: n)
    for name, record in content.items():
        wire: dict[str, Any]
        if isinstance(record, ArrayRecord):  # tensors: names and numbers only, nothing to print
            wire = array_record({name_of(k): to_wire(a.numpy()) for k, a in record.items()})
        else:
            values = {name_of(k): clean(v) for k, v in record.items()}
            wire = config_record(values) if isinstance(record, ConfigRecord) else metric_record(values)
        records[name_of(name)] = wire
    return records
