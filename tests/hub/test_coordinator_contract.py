"""The hub side of the contract version: a site of another version is refused with a clear message; the pooling
fields a current site releases reach the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.coordinator import Launch, NodeDirectory, Reply, Step, StepRunner
from hub.store import ResultsStore
from protocols.contract import CONTRACT_VERSION, JobKind, Op, WireRecords
from protocols.results import PoolingScale
from protocols.study import parse_protocol

PROTOCOL = {
    "study": {"id": "s", "version": "1"},
    "sites": ["a"],
    "model": {"manifest_sha256": "0" * 64},
    "tasks": ["phase"],
    "privacy": {"min_videos": 5},
}
METRIC = {
    "estimate": 0.8,
    "ci_low": 0.7,
    "ci_high": 0.88,
    "n_videos": 6,
    "n_frames": 120,
    "parse_fail_rate": 0.02,
    "suppressed": 0,
    "se_pooling": 0.31,
    "pooling_scale": PoolingScale.LOGIT.code,
    "undefined_share": 0.0,
}


class SiteOfVersion:
    """A site speaking contract `version` (None: a site from before versions), answering over the real contract."""

    def __init__(self, version: int | None, protocol_hash: str) -> None:
        self.version, self.protocol_hash = version, protocol_hash
        self.submitted: list[dict[str, Any]] = []

    def node_ids(self) -> list[int]:
        return [7]

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]:
        op, records = requests[7]
        job = {"job-id": records["job"]["values"]["job-id"], "state": "done"}
        if op is Op.SUBMIT:
            self.submitted.append(records["job"]["values"])
            return {7: Reply({"job": {"kind": "config", "values": {**job, "state": "queued"}}})}
        if op is Op.STATUS:
            return {7: Reply({"job": {"kind": "config", "values": job}})}
        meta: dict[str, Any] = {"software-version": "0.1.0", "protocol-hash": self.protocol_hash}
        if self.version is not None:
            meta["contract-version"] = self.version
        return {
            7: Reply(
                {
                    "job": {"kind": "config", "values": job},
                    "meta": {"kind": "config", "values": meta},
                    "metric.phase.accuracy": {"kind": "metric", "values": dict(METRIC)},
                }
            )
        }


def _run(tmp_path: Path, version: int | None) -> tuple[ResultsStore, SiteOfVersion]:
    protocol = parse_protocol(PROTOCOL)
    store = ResultsStore(f"sqlite:///{tmp_path / 'hub.db'}")
    store.put_study(
        study_id="s",
        version="1",
        title="t",
        protocol_hash=protocol.content_hash,
        protocol_yaml=yaml.safe_dump(PROTOCOL),
        model_hash="0" * 64,
    )
    store.new_launch("L1", "s", protocol.content_hash)
    site = SiteOfVersion(version, protocol.content_hash)
    launch = Launch(
        site,
        store,
        protocol,
        "L1",
        yaml.safe_dump(PROTOCOL),
        NodeDirectory(site, {7: "a"}),
        time.time() + 60,
        sleep=lambda _: None,
    )
    StepRunner(launch, Step(JobKind.EVALUATE, 0, ("a",))).run()
    return store, site


@pytest.mark.parametrize("version", [None, 1, CONTRACT_VERSION + 1])
def test_site_of_another_contract_version_is_refused(tmp_path: Path, version: int | None) -> None:
    store, site = _run(tmp_path, version)
    (job,) = store.jobs("L1")
    assert job["state"] == "error"
    assert f"site 'a' speaks message contract version {version or 1}" in job["detail"]
    assert f"this side speaks {CONTRACT_VERSION}" in job["detail"]
    assert store.results_frame("L1").empty  # nothing of it is pooled
    assert site.submitted[0]["contract-version"] == CONTRACT_VERSION  # the hub says its own version too


def test_current_site_results_keep_their_pooling_se(tmp_path: Path) -> None:
    store, _ = _run(tmp_path, CONTRACT_VERSION)
    frame = store.results_frame("L1")
    (row,) = frame.to_dict("records")
    assert row["se_pooling"] == 0.31 and row["pooling_scale"] == "logit" and row["undefined_share"] == 0.0
