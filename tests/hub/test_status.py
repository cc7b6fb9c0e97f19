"""`hub status` on a real hub home (SQLite store, the certificates `hub init` made); live against `hub serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from hub.cli import main
from hub.home import HubHome, init_hub
from hub.roster import check_roster
from hub.status import SCHEMA_VERSION, JobStatus, SiteStatus, Status, collect
from protocols import __version__
from protocols.contract import CONTRACT_VERSION, Reason
from protocols.procs import Child, free_port, port_open, wait_for
from protocols.states import LaunchState, SiteState

DOCS = Path(__file__).resolve().parents[2] / "docs" / "status.md"


@pytest.fixture
def home(tmp_path: Path) -> HubHome:
    """Two launches of one study; the newer one has a site in each interesting state."""
    home = init_hub(tmp_path / "hub", public_host="hub.example.org", public_port=free_port(), internal_port=free_port())
    store = home.store()
    for name, node in (("alpha", 11), ("beta", 12), ("gamma", 13), ("delta", 14)):
        store.add_site(name, node, None)
    store.revoke_site("delta")
    store.put_study(
        study_id="s1", version="1", title="t", protocol_hash="h" * 64, protocol_yaml="-", model_hash="m" * 64
    )
    store.new_launch("s1-old", "s1", "h" * 64)
    store.set_job("s1-old", 0, "alpha", job_id="a0", state="stored", software_version="0.0.9")
    store.finish_launch("s1-old", LaunchState.FINISHED)
    store.new_launch("s1-new", "s1", "h" * 64)
    store.set_job("s1-new", 0, "alpha", job_id="a1", state="stored", software_version=__version__)
    refused = f"{Reason.ALREADY_ANSWERED.value} (ask the site's operator for details)"
    store.set_job("s1-new", 0, "beta", job_id="b1", state="refused", detail=refused)
    store.set_job("s1-new", 0, "gamma", job_id="g1", state="awaiting_approval")
    store.set_job("s1-new", 0, "epsilon", job_id="e1", state="absent", detail="no reply before the deadline")
    return home


def _by_name(status: Status) -> dict[str, SiteStatus]:
    return {s.name: s for s in status.sites}


def test_sites_jobs_and_versions_from_the_store(home: HubHome) -> None:
    status = collect(home)
    sites = _by_name(status)
    assert list(sites) == ["alpha", "beta", "delta", "epsilon", "gamma"]
    alpha, beta = sites["alpha"], sites["beta"]
    assert (alpha.registered, alpha.node_id, alpha.software_version) == (True, "11", __version__)
    assert alpha.contract_version == CONTRACT_VERSION and beta.contract_version is None
    assert [(j.launch, j.state, j.reason) for j in alpha.jobs] == [("s1-new", "stored", None)]  # latest launch only
    assert (beta.jobs[0].state, beta.jobs[0].reason) == ("refused", "already-answered")
    assert sites["gamma"].jobs[0].state == SiteState.AWAITING_APPROVAL.value
    assert sites["delta"].registered is False and sites["delta"].node_id is None  # revoked
    assert sites["epsilon"].registered is False and sites["epsilon"].jobs[0].reason is None
    # `hub serve` is not running: nobody knows who is connected, and the hub says so instead of guessing.
    assert all(s.connected is None and s.last_seen is None for s in status.sites)
    assert status.hub.superlink_up is False and status.hub.proxy_up is False
    assert status.hub.open_studies == [{"study": "s1", "launch": "s1-new", "state": "running"}]
    certs = {c.name: c for c in status.hub.certificates}
    assert 820 <= certs["server"].days_left <= 825 and "hub.example.org" in certs["server"].names
    assert certs["ca"].days_left >= 3640 and certs["ca"].names == []


def test_the_json_form_is_the_documented_schema(home: HubHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--home", str(home.root), "--json", "--study", "s1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert set(data) == {"schema_version", "generated_at", "hub", "sites"}
    assert set(data["sites"][0]) == {f.name for f in fields(SiteStatus)}
    assert set(data["sites"][0]["jobs"][0]) == {f.name for f in fields(JobStatus)}
    documented = DOCS.read_text()
    for name in [*data, *data["hub"], *data["hub"]["certificates"][0], *data["sites"][0], *data["sites"][0]["jobs"][0]]:
        assert f"`{name}`" in documented, f"docs/status.md does not describe {name}"


def test_the_table_and_an_unknown_study(home: HubHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "hub: SuperLink DOWN" in out and "open studies: s1 (launch s1-new, running)" in out
    assert "  s1 round 0 evaluate: refused (already-answered)" in out
    assert f"alpha\tyes\tunknown\tnever\t{__version__}\t{CONTRACT_VERSION}" in out
    assert main(["status", "--home", str(home.root), "--study", "nope"]) != 0
    assert "unknown study 'nope'" in capsys.readouterr().err


# -- against a running `hub serve` (TLS, node authentication) and a real site SuperNode ------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubHome, Child]]:
    """A hub with two registered sites: alpha runs `site_node serve` (no model needed to connect), beta never does."""
    from hub.superlink import register_node
    from protocols.keys import read_public_key

    run = tmp_path_factory.mktemp("status-live")
    home = init_hub(run / "hub", public_port=free_port(), internal_port=free_port())
    cfg = home.config()
    hub = Child("hub", [sys.executable, "-m", "hub.cli", "serve", "--home", str(home.root)], run / "hub.log")
    site: Child | None = None
    try:
        wait_for(lambda: port_open("127.0.0.1", cfg.public_port), 90, "hub serve", hub)
        for name in ("alpha", "beta"):
            cli = [sys.executable, "-m", "site_node.cli", "init", "--home", str(run / name), "--site", name]
            cli += ["--superlink", f"127.0.0.1:{cfg.public_port}", "--ca", str(home.ca_cert)]
            subprocess.run(cli, check=True, timeout=60, stdout=subprocess.DEVNULL)
            pub = run / name / "secrets" / "node.key.pub"
            home.store().add_site(name, register_node(home, name, pub), read_public_key(pub))
        site = Child(
            "alpha", [sys.executable, "-m", "site_node.cli", "serve", "--home", str(run / "alpha")], run / "a.log"
        )
        yield home, site
    finally:
        if site is not None:
            site.stop()
        hub.stop()


def test_status_and_roster_against_a_running_hub(live: tuple[HubHome, Child], tmp_path: Path) -> None:
    home, site = live
    wait_for(lambda: bool(_by_name(collect(home))["alpha"].connected), 120, "alpha to connect", site)
    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "status", "--json", "--home", str(home.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    data = json.loads(out)
    assert data["hub"]["superlink_up"] is True and data["hub"]["proxy_up"] is True
    sites = {s["name"]: s for s in data["sites"]}
    assert (sites["alpha"]["connected"], sites["alpha"]["last_seen"]) == (True, "now")
    assert (sites["beta"]["registered"], sites["beta"]["connected"], sites["beta"]["last_seen"]) == (True, False, None)
    assert sites["alpha"]["software_version"] is None  # no stored result yet: the site has not reported one
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        'study: {id: live, version: "1"}\nsites: [alpha, beta]\nmodel: {manifest_sha256: "' + "ab" * 32 + '"}\n'
        "tasks: [phase]\nround_plan: {rounds: 1, deadline_minutes: 10, poll_seconds: 3}\nprivacy: {min_videos: 2}\n"
    )
    warnings: list[str] = []
    check_roster(home, protocol, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("sites ['beta'] are registered but not connected now")
    assert asdict(collect(home))["schema_version"] == SCHEMA_VERSION
