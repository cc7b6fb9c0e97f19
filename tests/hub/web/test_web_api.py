"""The dashboard's JSON API on SQLite and PostgreSQL: sign-in links, roles, launch/cancel, results, report zip."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.accounts import Accounts, UserRole, audit_log, login_tokens
from hub.home import HubHome
from hub.report import report
from hub.web.app import create_app
from protocols.study import loads_protocol


def signed_in(home: HubHome, name: str, role: UserRole) -> TestClient:
    token = Accounts(home.store()).add_user(name, role)
    client = TestClient(create_app(home), base_url="http://127.0.0.1:8780")
    reply = client.get(f"/login?token={token}", follow_redirects=False)
    assert reply.status_code == 303 and "surgfed_session" in reply.cookies
    return client


def finished_study(home: HubHome, protocol_file: Path, round_player) -> str:  # type: ignore[no-untyped-def]
    coordinator = signed_in(home, "carla", UserRole.COORDINATOR)
    with protocol_file.open("rb") as f:
        reply = coordinator.post("/api/v1/studies", files={"protocol": ("study.yaml", f, "application/x-yaml")})
    assert reply.status_code == 201, reply.text
    for _ in round_player(home.store(), reply.json()["launch_id"], reply.json()["study_id"]):
        pass
    return str(reply.json()["study_id"])


def test_login_link_is_single_use_and_stored_hashed(hub_home: HubHome) -> None:
    accounts = Accounts(hub_home.store())
    token = accounts.add_user("vera", UserRole.VIEWER)
    with hub_home.store().engine.connect() as con:
        stored = [r.token_sha256 for r in con.execute(select(login_tokens))]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    client = TestClient(create_app(hub_home), base_url="http://127.0.0.1:8780")
    assert client.get("/api/v1/studies").status_code == 401
    assert client.get(f"/login?token={token}", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/me").json() == {"name": "vera", "role": "viewer"}
    again = TestClient(create_app(hub_home)).get(f"/login?token={token}", follow_redirects=False)
    assert again.status_code == 403 and "already used" in again.text
    forged = TestClient(create_app(hub_home)).get("/login?token=" + "A" * 43, follow_redirects=False)
    assert forged.status_code == 403 and "unknown" in forged.text


def test_coordinator_launches_and_cancels_viewer_cannot(hub_home: HubHome, protocol_file: Path) -> None:
    coordinator = signed_in(hub_home, "carla", UserRole.COORDINATOR)
    viewer = signed_in(hub_home, "vera", UserRole.VIEWER)
    upload = {"protocol": ("study.yaml", protocol_file.read_bytes(), "application/x-yaml")}
    assert viewer.post("/api/v1/studies", files=upload).status_code == 403
    assert viewer.post("/studies", files=upload, follow_redirects=False).status_code == 403
    assert viewer.get("/api/v1/studies").json() == []

    reply = coordinator.post("/api/v1/studies", data={"protocol_path": str(protocol_file)})
    assert reply.status_code == 201 and reply.json()["state"] == "pending"
    study_id = reply.json()["study_id"]
    grid = viewer.get(f"/api/v1/studies/{study_id}/rounds").json()
    assert grid["state"] == "pending" and grid["rounds"] == [0] and len(grid["sites"]) == 3
    assert all(cell["jobs"] == [] for cell in grid["cells"])
    again = coordinator.post("/api/v1/studies", files=upload)
    assert again.status_code == 400 and "already has an open launch" in again.json()["error"]

    assert viewer.post(f"/api/v1/studies/{study_id}/cancel").status_code == 403
    cross = coordinator.post(f"/api/v1/studies/{study_id}/cancel", headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert coordinator.post(f"/api/v1/studies/{study_id}/cancel").json()["cancelled"] == [reply.json()["launch_id"]]
    assert viewer.get("/api/v1/studies").json()[0]["state"] == "cancelled"
    assert coordinator.post(f"/api/v1/studies/{study_id}/cancel").status_code == 400  # nothing open any more

    writes = [(e["actor"], e["action"]) for e in Accounts(hub_home.store()).audit()]
    assert ("carla", "study.launch") in writes and ("carla", "study.cancel") in writes
    assert not [w for w in writes if w[0] == "vera" and w[1].startswith("study.")]
    with hub_home.store().engine.connect() as con:
        assert len(con.execute(select(audit_log)).all()) == len(writes)


def test_results_are_the_reports_per_center_rows(
    hub_home: HubHome, protocol_file: Path, round_player, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    study_id = finished_study(hub_home, protocol_file, round_player)
    viewer = signed_in(hub_home, "vera", UserRole.VIEWER)
    report(hub_home, study_id, tmp_path / "report", formats=("csv",))
    expected = pd.read_csv(tmp_path / "report" / "per_center.csv")
    reply = viewer.get(f"/api/v1/studies/{study_id}/results").json()
    got = pd.DataFrame(reply["rows"], columns=reply["columns"])
    assert list(got.columns) == list(expected.columns)
    # through CSV as the report writes it, so empty text and null compare alike
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(got.to_csv(index=False))), expected, check_dtype=False)
    assert set(got["center"]) > {"lakeside-university", "mercy-general", "st-elsewhere"}  # and the pooled row

    zipped = viewer.get(f"/api/v1/studies/{study_id}/report.zip")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    assert f"{study_id}-report/per_center.csv" in names and f"{study_id}-report/forest_phase.svg" in names
    in_zip = pd.read_csv(
        io.BytesIO(zipfile.ZipFile(io.BytesIO(zipped.content)).read(f"{study_id}-report/per_center.csv"))
    )
    pd.testing.assert_frame_equal(in_zip, expected)

    page = viewer.get(f"/studies/{study_id}")
    assert page.status_code == 200 and "forest_phase.svg" in page.text and "Download report" in page.text
    assert viewer.get(f"/studies/{study_id}/figures/forest_phase.svg").headers["content-type"] == "image/svg+xml"
    assert viewer.get(f"/studies/{study_id}/figures/..%2Fhub.toml").status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/studies/no-such-study", 404),
        ("/api/v1/studies/no-such-study/results", 404),
        ("/studies/no-such-study", 404),
        ("/sites", 200),
        ("/api/v1/sites", 200),
        ("/static/grid.js", 200),
    ],
)
def test_pages_and_errors(hub_home: HubHome, path: str, status: int) -> None:
    viewer = signed_in(hub_home, "vera", UserRole.VIEWER)
    assert viewer.get(path).status_code == status


def test_openapi_schema_lists_the_v1_api(hub_home: HubHome) -> None:
    schema = TestClient(create_app(hub_home)).get("/api/v1/openapi.json").json()
    assert {"/api/v1/studies", "/api/v1/studies/{study_id}/results", "/api/v1/studies/{study_id}/report.zip"} <= set(
        schema["paths"]
    )


def test_coordinator_extends_and_reruns_viewer_cannot(hub_home: HubHome, protocol_file: Path, round_player) -> None:  # type: ignore[no-untyped-def]
    """The buttons' API calls the same hub.studies functions as `hub study extend|rerun`, and logs each write."""
    study_id = finished_study(hub_home, protocol_file, round_player)
    coordinator = signed_in(hub_home, "carla", UserRole.COORDINATOR)
    viewer = signed_in(hub_home, "vera", UserRole.VIEWER)
    url = f"/api/v1/studies/{study_id}/rounds/0"
    assert viewer.post(f"{url}/rerun", json={"sites": ["mercy-general"]}).status_code == 403
    stored = coordinator.post(f"{url}/rerun", json={"sites": ["mercy-general"]})
    assert stored.status_code == 400 and "a released result is never asked for twice" in stored.json()["error"]
    closed = coordinator.post(f"{url}/extend", json={"by": "7d"})
    assert closed.status_code == 400 and "hub study rerun" in closed.json()["error"]
    launch_id = hub_home.store().launches_of(study_id)[0]["launch_id"]
    hub_home.store().set_job(launch_id, 0, "st-elsewhere", state="absent", detail="no reply before the deadline")
    asked = coordinator.post(f"{url}/rerun", json={"sites": ["st-elsewhere"], "by": "36h"})
    assert asked.status_code == 200, asked.text
    assert asked.json()["jobs"] == {"st-elsewhere": f"{launch_id}.r0.evaluate.st-elsewhere"}  # the id it holds
    assert viewer.get("/api/v1/studies").json()[0]["state"] == "pending"  # for `hub serve` to run
    writes = [(e["actor"], e["action"]) for e in Accounts(hub_home.store()).audit()]
    assert ("carla", "study.rerun") in writes and ("carla", "study.extend") not in writes  # a refusal writes nothing


def test_report_methods_name_the_protocols_replicates_and_the_pooling_chosen(
    hub_home: HubHome, protocol_file: Path, round_player, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    study_id = finished_study(hub_home, protocol_file, round_player)
    replicates = loads_protocol(protocol_file.read_text(), "test").privacy.bootstrap_replicates
    for hk, pooling in ((False, "normal distribution (Hartung-Knapp-Sidik-Jonkman was not applied"),
                        (True, "Hartung-Knapp(-Sidik-Jonkman) method with the ad hoc safeguard")):  # fmt: skip
        report(hub_home, study_id, tmp_path / f"report-{hk}", formats=("md",), hartung_knapp=hk)
        md = (tmp_path / f"report-{hk}" / "per_center.md").read_text(encoding="utf-8")
        assert pooling in md and f"bootstrap with {replicates} replicates" in md
