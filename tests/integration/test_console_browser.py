"""The data owner's console in headless Debian Chromium on the manual-release site of the shared federation:
approve a protocol the hub asked for, see the exact payload, release one round and reject the next."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from hub.demo.loopback import console_port
from hub.launcher import launch
from protocols.procs import port_open, wait_for
from protocols.study import load_protocol
from site_node.audit import AuditLog
from site_node.home import SiteHome
from site_node.jobs import JobStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "out" / "screenshots"
PHASE_ONLY = re.compile(r"(?ms)^tasks:\n.*?(?=^round_plan:)")


def _site_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "site_node.cli", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def _hub_job(store: Any, study: str, round_: int) -> dict[str, Any] | None:
    jobs = [j for j in store.jobs_for_study(study) if j["round"] == round_]
    return max(jobs, key=lambda j: j["updated_at"]) if jobs else None


def _await(store: Any, study: str, round_: int, state: str, timeout: float) -> dict[str, Any]:
    """The hub's job of this round once it reaches `state`."""

    def reached() -> bool:
        job = _hub_job(store, study, round_)
        return job is not None and job["state"] == state

    wait_for(reached, timeout, f"round {round_} of {study} to be {state} at the hub")
    job = _hub_job(store, study, round_)
    assert job is not None
    return job


def test_data_owner_approves_protocol_and_decides_releases(federation: Any) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` (apt-get install -y chromium) installs it")
    from playwright.sync_api import sync_playwright

    name, store = federation.small, federation.hub.store()
    home = SiteHome(federation.run / "sites" / name)
    base = f"http://127.0.0.1:{console_port(home.root)}"
    wait_for(lambda: port_open("127.0.0.1", console_port(home.root)), 60, "the console `site_node serve` runs")
    protocol = federation.protocol("console-study", [name], {"rounds: 1": "rounds: 2", "deadline: 8m": "deadline: 4m"})
    protocol.write_text(PHASE_ONLY.sub("tasks:\n  - {name: phase, sample_every_s: 2.0, max_new_tokens: 48}\n",
                                       protocol.read_text()))  # fmt: skip
    digest = load_protocol(protocol).content_hash
    launch(federation.hub, protocol, echo=lambda _: None)  # refused by hash: the site has not approved it
    refused = _hub_job(store, "console-study", 0)
    assert refused is not None and refused["state"] == "refused", refused
    status = json.loads(_site_cli("status", "--home", str(home.root), "--json"))
    assert status["serve_running"] and status["engine_up"] and status["supernode_running"], status
    assert status["last_contact"] and status["pending_protocols"] >= 1 and status["console_url"] == base
    link = _site_cli("console", "login", "--home", str(home.root), "--user", "dora").split()[-1]
    assert link.startswith(base + "/login?token=")

    errors: list[str] = []
    done: dict[str, str] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(link)
            assert page.url == base + "/" and "Site " + name in page.inner_text("h1")
            assert page.locator("#engine-up").count() == 1  # serve's engine answers
            page.click("nav a[href='/protocols']")
            page.click(f"a[href='/protocols/{digest}']")
            assert "metric.phase." in page.inner_text("#released-fields")
            assert "2 evaluate round(s)" in page.inner_text("main")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "console-protocol.png"), full_page=True)
            page.click("#approve-protocol")
            assert "approved console-study" in page.inner_text("#done")
            assert digest in page.inner_text("#approved-protocols")

            thread = threading.Thread(
                target=lambda: done.setdefault("id", launch(federation.hub, protocol, echo=lambda _: None))
            )
            thread.start()
            for round_, button in ((0, ".approve-release"), (1, ".reject-release")):
                job = _await(store, "console-study", round_, "awaiting_approval", 180)
                page.goto(base + "/releases")
                card = page.locator(f"#release-{job['job_id']}")
                shown = card.locator("table.payload").inner_text()
                payload = JobStore(home.jobs_dir).get(job["job_id"]).payload  # type: ignore[union-attr]
                assert payload is not None and len(payload) > 2
                for rec_name, record in payload.items():  # every record and field, value as sent
                    assert rec_name in shown
                    for key, value in record["values"].items():
                        assert f"{key}\t{json.dumps(value)}" in shown, (rec_name, key)
                assert json.loads(card.locator("pre.payload-json").text_content() or "") == payload
                if round_ == 0:
                    assert store.results_frame(job["launch_id"]).empty  # nothing left before the decision
                    page.screenshot(path=str(SCREENSHOTS / "console-release.png"), full_page=True)
                else:
                    card.locator("input[name=note]").fill("not this round")
                card.locator(button).click()
                assert page.locator("#done").count() == 1 and page.locator(f"#release-{job['job_id']}").count() == 0
                _await(store, "console-study", round_, "stored" if round_ == 0 else "rejected", 120)
                if round_ == 0:
                    assert not store.results_frame(job["launch_id"]).empty
            thread.join(timeout=120)
            page.goto(base + "/audit?event=release-rejected")
            assert "dora" in page.inner_text("#audit-log") and "intact" in page.inner_text("#verify")
        finally:
            browser.close()
    assert errors == []
    mine = [
        e
        for e in AuditLog(home.audit_log).entries()
        if e.get("protocol_hash") == digest or str(e.get("job_id", "")).startswith(done["id"])
    ]
    decisions = ("protocol-approved", "release-approved", "release-rejected")
    by = {e["event"]: e.get("operator") for e in mine if e["event"] in decisions}
    assert by == {"protocol-approved": "dora", "release-approved": "dora", "release-rejected": "dora"}
