"""Site engine request handling without a model: token, protocol approval, per-frame refusal, audit."""

from __future__ import annotations

from pathlib import Path

import yaml

from protocols.contract import CONTRACT_VERSION
from protocols.study import load_protocol
from site_node.approvals import approve
from site_node.engine import SiteEngine
from site_node.home import SiteHome, init_home

PROTOCOL = {
    "study": {"id": "s1", "version": "1"},
    "sites": ["a"],
    "model": {"manifest_sha256": "0" * 64},
    "tasks": ["phase"],
    "privacy": {"min_videos": 5},
}


def _submit(
    engine: SiteEngine,
    protocol_hash: str,
    job_id: str = "j1",
    token: str | None = None,
    contract: int | None = CONTRACT_VERSION,
) -> dict:
    version = {} if contract is None else {"contract-version": contract}
    return engine.handle(
        {
            "token": token if token is not None else engine.home.token(),
            "op": "submit",
            "records": {
                "job": {
                    "kind": "config",
                    "values": {
                        "job-id": job_id,
                        "kind": "evaluate",
                        "study": "s1",
                        "round": 0,
                        "protocol-hash": protocol_hash,
                        **version,
                    },
                }
            },
        }
    )


def test_requests(tmp_path: Path) -> None:
    home = init_home(tmp_path / "site", "a")
    engine = SiteEngine(home, load=False)
    proto_file = tmp_path / "p.yaml"
    proto_file.write_text(yaml.safe_dump(PROTOCOL))
    protocol_hash = load_protocol(proto_file).content_hash

    assert _submit(engine, protocol_hash, token="wrong") == {"ok": False, "error": "engine token rejected"}

    reply = _submit(engine, protocol_hash)  # not approved yet
    job = reply["records"]["job"]["values"]
    assert job["state"] == "refused" and job["reason"] == "protocol-not-approved" and "detail" not in job

    approve(home.approved_dir, proto_file)
    reply = _submit(engine, protocol_hash, job_id="j2")
    assert reply["records"]["job"]["values"]["state"] == "queued"
    # The same job submitted again (a restarted hub) is answered with its current state, not run twice.
    assert _submit(engine, protocol_hash, job_id="j2")["records"]["job"]["values"]["state"] == "queued"

    status = engine.handle(
        {
            "token": home.token(),
            "op": "status",
            "records": {"job": {"kind": "config", "values": {"job-id": "j2", "frames": "all"}}},
        }
    )
    assert status == {"ok": False, "error": "bad-request"}  # the why stays in the site's log and audit log
    assert "frames" in engine.audit.entries()[-1]["reason"]

    events = [e["event"] for e in engine.audit.entries()]
    assert (
        events.count("refused") == 1
        and events.count("accepted") == 1
        and "refused-request" in events
        and events.count("released") == 3
    )


def test_per_frame_protocol_cannot_be_approved(tmp_path: Path) -> None:
    import pytest

    from protocols.errors import ProtocolError

    home = SiteHome(init_home(tmp_path / "site", "a").root)
    proto_file = tmp_path / "p.yaml"
    proto_file.write_text(yaml.safe_dump({**PROTOCOL, "privacy": {"outputs": "per_frame"}}))
    with pytest.raises(ProtocolError, match="per_frame"):
        approve(home.approved_dir, proto_file)


def test_hub_of_another_contract_version_is_refused(tmp_path: Path) -> None:
    home = init_home(tmp_path / "site", "a")
    engine = SiteEngine(home, load=False)
    proto_file = tmp_path / "p.yaml"
    proto_file.write_text(yaml.safe_dump(PROTOCOL))
    approve(home.approved_dir, proto_file)
    protocol_hash = load_protocol(proto_file).content_hash
    for job_id, version in (("old", None), ("older", 1), ("newer", CONTRACT_VERSION + 1)):
        job = _submit(engine, protocol_hash, job_id=job_id, contract=version)["records"]["job"]["values"]
        assert job["state"] == "refused" and job["reason"] == "contract-version" and "detail" not in job
        detail = engine.jobs.get(job_id).detail  # the words stay at the site
        assert f"the hub speaks message contract version {version or 1}" in detail
        assert f"this side speaks {CONTRACT_VERSION}" in detail
    hello = engine.handle({"token": home.token(), "op": "hello", "records": {}})
    assert hello["records"]["site"]["values"]["contract-version"] == CONTRACT_VERSION
