"""The message contract: exactly the allowed records, keys and value kinds pass."""

from __future__ import annotations

import pytest

from protocols.contract import CONTRACT_VERSION, Op, check_contract_version, check_records
from protocols.errors import ContractError

JOB = {"job": {"kind": "config", "values": {"job-id": "j1", "state": "done"}}}
META = {"meta": {"kind": "config", "values": {"software-version": "0.1.0", "protocol-hash": "ab" * 32}}}
METRIC = {
    "metric.phase.accuracy": {
        "kind": "metric",
        "values": {
            "estimate": 0.5,
            "ci_low": 0.4,
            "ci_high": 0.6,
            "n_videos": 6,
            "n_frames": 100,
            "parse_fail_rate": 0.0,
            "suppressed": 0,
        },
    }
}


def test_full_fetch_reply_passes() -> None:
    check_records(Op.FETCH, {**JOB, **META, **METRIC})


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            {
                **JOB,
                **META,
                "metric.phase.accuracy": {
                    "kind": "metric",
                    "values": {**METRIC["metric.phase.accuracy"]["values"], "per_frame": 1.0},
                },
            },
            "not in the contract",
        ),
        ({**JOB, **META, "predictions": {"kind": "config", "values": {"x": "y"}}}, "not allowed"),
        (
            {
                **JOB,
                **META,
                "metric.phase.accuracy": {"kind": "metric", "values": {"estimate": "0.5", "suppressed": 0}},
            },
            "expected float",
        ),
        ({**JOB, **META, "metric.phase.accuracy": {"kind": "metric", "values": {"suppressed": 2}}}, "expected flag"),
        (
            {
                **JOB,
                **META,
                "metric.phase.accuracy": {"kind": "metric", "values": {"estimate": float("nan"), "suppressed": 0}},
            },
            "expected float",
        ),
        ({**JOB, **META, "metric.phase.accuracy": {"kind": "config", "values": {"suppressed": 0}}}, "must be a metric"),
        ({**META}, "missing records"),
        ({"job": {"kind": "config", "values": {"job-id": "j1"}}}, "lacks required key"),
        ({**JOB, **META, "metric.Phase.accuracy": METRIC["metric.phase.accuracy"]}, "not allowed"),
    ],
)
def test_contract_refuses(records: dict, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_records(Op.FETCH, records)


def test_requests_checked_too() -> None:
    check_records(Op.STATUS, {"job": {"kind": "config", "values": {"job-id": "j"}}}, direction="request")
    with pytest.raises(ContractError):
        check_records(
            Op.STATUS, {"job": {"kind": "config", "values": {"job-id": "j", "frames": "all"}}}, direction="request"
        )


def test_metric_record_carries_the_pooling_se_and_scale() -> None:
    values = {
        **METRIC["metric.phase.accuracy"]["values"],
        "se_pooling": 0.3,
        "pooling_scale": 1,
        "undefined_share": 0.1,
    }
    check_records(Op.FETCH, {**JOB, **META, "metric.phase.accuracy": {"kind": "metric", "values": values}})
    bad = {**values, "pooling_scale": "logit"}  # numbers only on the wire
    with pytest.raises(ContractError, match="expected int"):
        check_records(Op.FETCH, {**JOB, **META, "metric.phase.accuracy": {"kind": "metric", "values": bad}})


@pytest.mark.parametrize(("received", "ok"), [(CONTRACT_VERSION, True), (None, False), (1, False), (99, False)])
def test_contract_version_check(received: int | None, ok: bool) -> None:
    if ok:
        check_contract_version(received, "the hub")
        return
    with pytest.raises(ContractError, match=rf"the hub speaks message contract version {received or 1}"):
        check_contract_version(received, "the hub")


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ({"state": "running", "progress": 0.3}, True),
        ({"state": "failed", "progress": 0.0, "reason": "no-usable-data"}, True),
        ({"state": "running", "progress": 7 / 23}, False),  # a fraction that gives counts away
        ({"state": "running", "detail": "phase: 7/23 frames"}, False),  # free text is not in the contract
        ({"state": "failed", "reason": "internal error: /srv/site/store"}, False),
        ({"state": "exploded"}, False),
    ],
)
def test_status_carries_fixed_vocabularies_only(values: dict, ok: bool) -> None:
    reply = {"job": {"kind": "config", "values": {"job-id": "j1", **values}}}
    if ok:
        check_records(Op.STATUS, reply)
    else:
        with pytest.raises(ContractError):
            check_records(Op.STATUS, reply)


def test_job_ids_and_progress_helpers() -> None:
    from protocols.contract import JOB_ID, coarse_progress, job_id_for

    assert coarse_progress(7 / 23) == 0.3 and coarse_progress(float("nan")) == 0.0 and coarse_progress(2.0) == 1.0
    job_id = job_id_for("study.v1-20261129T000000-abc123", 3, "evaluate", "site.a")
    assert JOB_ID.fullmatch(job_id) and "." not in job_id
