"""The wire vocabulary: record builders give exactly the contract's wire form; the hub's stored states."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.arrays import to_wire
from protocols.contract import JobKind, JobState, Op, Reason, WireRecords, check_records
from protocols.records import (
    adapter_records,
    hello_reply,
    job_reply,
    job_request,
    metric_record,
    metric_record_name,
    result_meta,
    submit_request,
    train_record,
)
from protocols.states import LaunchState, SiteState

HASH = "ab" * 32
ADAPTER = adapter_records(
    {"adapter": to_wire(np.zeros(4, np.uint16))}, {"encoding": "e", "wire-dtype": "bf16", "tensors": "[]"}
)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (job_request("j1"), {"job": {"kind": "config", "values": {"job-id": "j1"}}}),
        (
            job_reply("j1", JobState.RUNNING, progress=7 / 23),
            {"job": {"kind": "config", "values": {"job-id": "j1", "state": "running", "progress": 0.3}}},
        ),
        (
            job_reply("j1", JobState.REFUSED, progress=0.0, reason=Reason.POLICY),
            {
                "job": {
                    "kind": "config",
                    "values": {"job-id": "j1", "state": "refused", "progress": 0.0, "reason": "policy"},
                }
            },
        ),
        (job_reply("j1", JobState.DONE), {"job": {"kind": "config", "values": {"job-id": "j1", "state": "done"}}}),
        (
            result_meta("0.1.0", HASH),
            {
                "meta": {
                    "kind": "config",
                    "values": {"software-version": "0.1.0", "protocol-hash": HASH, "contract-version": 2},
                }
            },
        ),
        (train_record(12), {"train": {"kind": "metric", "values": {"num-examples": 12}}}),
        (train_record(12, 3), {"train": {"kind": "metric", "values": {"num-examples": 12, "epsilon": 3.0}}}),
        (
            hello_reply("0.1.0", "a"),
            {
                "site": {
                    "kind": "config",
                    "values": {"software-version": "0.1.0", "site-name": "a", "contract-version": 2},
                }
            },
        ),
    ],
)
def test_builders_spell_the_wire_form(records: WireRecords, expected: WireRecords) -> None:
    assert records == expected


@pytest.mark.parametrize(
    ("op", "direction", "records"),
    [
        (Op.SUBMIT, "request", submit_request("j", JobKind.TRAIN, "s", 1, HASH, "study: {}")),
        (Op.SUBMIT, "request", {**submit_request("j", JobKind.EVALUATE, "s", 0, HASH), **ADAPTER}),
        (Op.STATUS, "request", job_request("j")),
        (Op.FETCH, "request", job_request("j")),
        (Op.HELLO, "reply", hello_reply("0.1.0", "a")),
        (Op.SUBMIT, "reply", job_reply("j", JobState.QUEUED, progress=0.0)),
        (Op.STATUS, "reply", job_reply("j", JobState.REFUSED, reason=Reason.PROTOCOL_NOT_APPROVED)),
        (
            Op.FETCH,
            "reply",
            {
                **job_reply("j", JobState.DONE),
                **result_meta("0.1.0", HASH),
                metric_record_name("phase", "accuracy"): metric_record(
                    {"estimate": 0.5, "n_videos": 6, "suppressed": 0}
                ),
            },
        ),
        (
            Op.FETCH,
            "reply",
            {**job_reply("j", JobState.DONE), **result_meta("0.1.0", HASH), **ADAPTER, **train_record(5, 1.5)},
        ),
    ],
)
def test_what_the_builders_make_passes_the_contract(op: Op, direction: str, records: WireRecords) -> None:
    check_records(op, records, direction=direction)


def test_site_states_extend_the_job_states_with_the_hub_s_own() -> None:
    assert {SiteState.of(s).value for s in JobState} == {s.value for s in JobState}
    assert {s.value for s in SiteState} - {s.value for s in JobState} == {"pending", "error", "absent", "stored"}
    final = {s.value for s in SiteState if s.final}
    assert final == {"stored", "error", "absent", "failed", "refused", "rejected"}
    assert not SiteState.DONE.final  # released at the site, but not over before the hub has stored it
    # The stored strings stay what the store and its readers already hold.
    assert [s.value for s in LaunchState] == ["pending", "running", "finished", "failed", "cancelled"]
