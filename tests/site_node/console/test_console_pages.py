"""The site console over a real site home: one-time links, every page, and buttons that call the CLI's functions."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from protocols.contract import JobKind, JobState
from protocols.model_ref import manifest_hash
from protocols.records import job_reply, metric_record, result_meta
from protocols.study import load_protocol
from site_node.approvals import is_approved, keep_pending
from site_node.audit import AuditLog
from site_node.cli import main
from site_node.console.accounts import ConsoleAccounts, Role
from site_node.console.app import create_app
from site_node.home import SiteHome, init_home
from site_node.jobs import Job, JobStore

JOB = "launch1-r0-evaluate-north"
BASE = "http://127.0.0.1:8790"


@pytest.fixture
def site(tmp_path: Path) -> tuple[SiteHome, str]:
    """A manual-release site with one result waiting and one protocol request from the hub; returns the hash."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    home = init_home(tmp_path / "north", "north", model_dir=model, release="manual")
    payload = {
        **job_reply(JOB, JobState.DONE),
        **result_meta("0.1.0", "a" * 64),
        "metric.phase.accuracy": metric_record(
            {"estimate": 0.625, "ci_low": 0.5, "ci_high": 0.75, "n_videos": 6, "n_frames": 140, "suppressed": 0}
        ),
        "metric.phase.f1": metric_record({"suppressed": 1}),
    }
    JobStore(home.jobs_dir).save(
        Job(JOB, JobKind.EVALUATE, "console-study", 0, "a" * 64, state=JobState.AWAITING_APPROVAL, payload=payload)
    )
    template = resources.files("protocols.studies").joinpath("demo.yaml.tmpl").read_text(encoding="utf-8")
    text = template.replace("{sites}", '["north"]').replace("{model_sha256}", manifest_hash(model))
    (tmp_path / "p.yaml").write_text(text)
    digest = load_protocol(tmp_path / "p.yaml").content_hash
    assert keep_pending(home.approved_dir, digest, text) == "kept"
    return home, digest


def signed_in(home: SiteHome, name: str, role: Role = Role.OWNER) -> TestClient:
    client = TestClient(create_app(home), base_url=BASE)
    token = ConsoleAccounts(home.console_dir).new_login(name, role)
    reply = client.get(f"/login?token={token}", follow_redirects=False)
    assert reply.status_code == 303 and "surgfed_site_session" in reply.cookies
    return client


def test_login_link_works_once_and_only_its_digest_is_stored(site: tuple[SiteHome, str]) -> None:
    home, _ = site
    client = TestClient(create_app(home), base_url=BASE)
    assert client.get("/").status_code == 401
    token = ConsoleAccounts(home.console_dir).new_login("dora", Role.OWNER)
    assert client.get(f"/login?token={token}", follow_redirects=False).status_code == 303
    assert client.get("/").status_code == 200
    again = TestClient(create_app(home), base_url=BASE).get(f"/login?token={token}")
    assert again.status_code == 403 and "already used" in again.text
    assert token.encode() not in (home.console_dir / "console.db").read_bytes()
    assert oct((home.console_dir / "console.db").stat().st_mode & 0o777) == "0o600"
    logins = [e for e in AuditLog(home.audit_log).entries() if e["event"] == "console-login"]
    assert [e["operator"] for e in logins] == ["dora"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ["Site north", "not running", "message contract v"]),
        ("/data", ["Videos", "none yet"]),
        ("/deid", ["No dataset ingested yet"]),
        ("/protocols", ["demo-phase v1.0"]),
        ("/releases", ["metric.phase.accuracy", "0.625", "ci_high", "launch1-r0-evaluate-north"]),
        ("/audit", ["intact", "Privacy ledger", "no training rounds yet"]),
        ("/policy", ["min_videos", "epsilon_cap", "manual"]),
    ],
)
def test_every_page_renders(site: tuple[SiteHome, str], path: str, expected: list[str]) -> None:
    home, _ = site
    reply = signed_in(home, "ivan", Role.VIEWER).get(path)
    assert reply.status_code == 200, reply.text
    for text in expected:
        assert text in reply.text, (path, text)


def test_protocol_page_names_the_exact_fields_and_approve_pins_it(site: tuple[SiteHome, str]) -> None:
    home, digest = site
    owner = signed_in(home, "dora")
    page = owner.get(f"/protocols/{digest}").text
    assert "metric.phase." in page and "ci_low" in page and "approve-protocol" in page
    assert "<th>what leaves</th>" in page and "<th>fine-tuning</th>" in page
    assert owner.post(f"/protocols/{digest}/approve").status_code == 200  # redirected to the list
    assert is_approved(home.approved_dir, digest)
    entry = [e for e in AuditLog(home.audit_log).entries() if e["event"] == "protocol-approved"][-1]
    assert entry["operator"] == "dora" and entry["protocol_hash"] == digest


def test_protocol_reject_drops_the_request(site: tuple[SiteHome, str]) -> None:
    home, digest = site
    signed_in(home, "dora").post(f"/protocols/{digest}/reject", data={"note": "not our study"})
    assert not (home.approved_dir / "pending" / f"{digest}.yaml").exists() and not is_approved(
        home.approved_dir, digest
    )
    entry = AuditLog(home.audit_log).entries()[-1]
    assert entry["event"] == "protocol-rejected" and entry["operator"] == "dora"


@pytest.mark.parametrize(("button", "state", "event"), [("approve", JobState.DONE, "release-approved"),
                                                        ("reject", JobState.REJECTED, "release-rejected")])  # fmt: skip
def test_release_buttons_decide_as_the_cli_does(
    site: tuple[SiteHome, str], button: str, state: JobState, event: str
) -> None:
    home, _ = site
    reply = signed_in(home, "dora").post(f"/releases/{JOB}/{button}", data={"note": "too early"})
    assert reply.status_code == 200 and "Nothing is waiting" in reply.text
    job = JobStore(home.jobs_dir).get(JOB)
    assert job is not None and job.state is state
    entry = AuditLog(home.audit_log).entries()[-1]
    assert entry["event"] == event and entry["operator"] == "dora" and entry["job_id"] == JOB


def test_viewer_and_cross_origin_requests_cannot_decide(site: tuple[SiteHome, str]) -> None:
    home, digest = site
    viewer = signed_in(home, "ivan", Role.VIEWER)
    refused = viewer.post(f"/releases/{JOB}/approve")
    assert refused.status_code == 403 and "viewer" in refused.text
    assert "approve-release" not in viewer.get("/releases").text
    owner = signed_in(home, "dora")
    forged = owner.post(f"/releases/{JOB}/approve", headers={"origin": "http://evil.example"})
    assert forged.status_code == 403 and "cross-origin" in forged.text
    assert owner.post(f"/protocols/{'0' * 64}/approve").status_code == 400
    job = JobStore(home.jobs_dir).get(JOB)
    assert job is not None and job.state is JobState.AWAITING_APPROVAL


def test_status_command_and_login_link(site: tuple[SiteHome, str], capsys: pytest.CaptureFixture[str]) -> None:
    home, _ = site
    assert main(["status", "--home", str(home.root), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["site"] == "north" and status["serve_running"] is False and status["pending_releases"] == 1
    assert status["pending_protocols"] == 1 and status["store_bytes"] >= 0
    assert main(["status", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "site_node serve    NOT running" in out and "1 release(s), 1 protocol request(s)" in out
    assert main(["console", "login", "--home", str(home.root), "--user", "dora"]) == 0
    link = capsys.readouterr().out.split()[-1]
    assert link.startswith("http://127.0.0.1:8790/login?token=")
    client = TestClient(create_app(home), base_url=BASE)
    assert client.get(link.removeprefix(BASE), follow_redirects=False).status_code == 303


@pytest.mark.parametrize(("good", "expected"), [(True, "anchors match"), (False, "anchors do not match")])
def test_anchor_check_on_an_uploaded_hub_export(site: tuple[SiteHome, str], good: bool, expected: str) -> None:
    home, _ = site
    client = signed_in(home, "ivan", Role.VIEWER)  # the sign-in itself is audit entry 1
    first = AuditLog(home.audit_log).entries()[0]
    head = first["hash"] if good else "f" * 64
    anchors = json.dumps({"seq": first["seq"], "head": head}) + "\n"
    reply = client.post("/audit/anchors", files={"anchors": ("anchors.jsonl", anchors.encode(), "application/json")})
    assert reply.status_code == 200 and expected in reply.text
