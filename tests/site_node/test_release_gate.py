"""Release gate: small cells suppressed, extra keys stopped and logged, every release audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.contract import CONTRACT_VERSION, Op
from protocols.errors import ContractError
from protocols.results import PoolingScale
from protocols.study import parse_protocol
from site_node.audit import AuditLog, verify
from site_node.metrics.bootstrap import Estimate
from site_node.release_gate import ReleaseGate, evaluation_payload

PROTOCOL = parse_protocol(
    {
        "study": {"id": "s", "version": "1"},
        "sites": ["a"],
        "model": {"manifest_sha256": "0" * 64},
        "tasks": ["phase"],
        "privacy": {"min_videos": 5},
    }
)


def est(n_videos: int) -> Estimate:
    return Estimate(0.7, 0.6, 0.8, n_videos, 40 * n_videos, 0.05, se_pooling=0.21, undefined_share=0.01)


def test_small_cell_is_withheld_and_flagged() -> None:
    payload = evaluation_payload("j", PROTOCOL, {"phase": {"accuracy": est(3), "f1": est(3)}})
    assert payload["metric.phase.accuracy"]["values"] == {"suppressed": 1}
    big = evaluation_payload("j", PROTOCOL, {"phase": {"accuracy": est(5)}})["metric.phase.accuracy"]["values"]
    assert big == {
        "estimate": 0.7,
        "ci_low": 0.6,
        "ci_high": 0.8,
        "n_videos": 5,
        "n_frames": 200,
        "parse_fail_rate": 0.05,
        "suppressed": 0,
        "se_pooling": 0.21,  # the SE on the pooling scale, from the site's bootstrap
        "pooling_scale": PoolingScale.LOGIT.code,
        "undefined_share": 0.01,
    }
    assert payload["meta"]["values"]["protocol-hash"] == PROTOCOL.content_hash
    assert payload["meta"]["values"]["contract-version"] == CONTRACT_VERSION


def test_undefined_metric_leaves_only_the_flag() -> None:
    nan = float("nan")
    undefined = Estimate(nan, nan, nan, 6, 240, 0.0)  # e.g. F1 with nothing to find and nothing predicted
    payload = evaluation_payload("j", PROTOCOL, {"cvs": {"f1_c1": undefined}})
    assert payload["metric.cvs.f1_c1"]["values"] == {"suppressed": 1}


def test_extra_key_is_stopped_and_logged(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    gate = ReleaseGate(audit)
    payload = evaluation_payload("j", PROTOCOL, {"phase": {"accuracy": est(6)}})
    gate.release(Op.FETCH, payload, job_id="j")
    payload["metric.phase.accuracy"]["values"]["per_video"] = 0.9
    with pytest.raises(ContractError, match="per_video"):
        gate.release(Op.FETCH, payload, job_id="j")
    events = [e["event"] for e in audit.entries()]
    assert events == ["released", "refused-outgoing"]
    assert verify(audit.path) == 2
