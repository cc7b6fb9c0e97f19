"""The dashboard in headless Debian Chromium (Playwright): sign in by link, launch, watch the grid, download."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.home import HubHome, init_hub
from protocols.procs import port_open

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "out" / "screenshots" / "study.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_cli(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return done.stdout


@pytest.fixture
def web_home(tmp_path: Path) -> Iterator[tuple[HubHome, str]]:
    """A hub home whose hub.toml names a free dashboard port, served by a real `hub web` process."""
    home = init_hub(tmp_path / "hub")
    port = _free_port()
    home.config_file.write_text(home.config_file.read_text().replace("port = 8780", f"port = {port}"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "web.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "web", "--home", str(home.root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        for _ in range(600):
            if port_open("127.0.0.1", port) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        yield home, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def login_link(home: HubHome, name: str, role: str) -> str:
    out = hub_cli("users", "add", name, "--role", role, "--home", str(home.root))
    match = re.search(r"(http://\S+/login\?token=\S+)", out)
    assert match, out
    return match.group(1)


def test_coordinator_and_viewer_in_chromium(
    web_home: tuple[HubHome, str], protocol_file: Path, round_player, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` (apt-get install -y chromium) installs it")
    from playwright.sync_api import sync_playwright

    home, base = web_home
    coordinator_link = login_link(home, "carla", "coordinator")
    viewer_link = login_link(home, "vera", "viewer")
    assert coordinator_link.startswith(base + "/login?token=")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            coordinator = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page = coordinator.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(coordinator_link)
            assert page.url == base + "/"
            page.set_input_files("input[name=protocol]", str(protocol_file))
            page.click("#launch")
            page.wait_for_url(base + "/studies/web-phase")
            assert page.inner_text("#study-state") == "pending"
            assert page.locator("#grid .badge", has_text="not started").count() == 3

            launch_id = home.store().launches_of("web-phase")[0]["launch_id"]
            for state in round_player(home.store(), launch_id, "web-phase"):
                # the page polls the API; every site's badge must reach the state the coordinator recorded
                page.locator("#grid td .badge", has_text=re.compile(f"^{state}$")).nth(2).wait_for(timeout=15000)
                if state == "running":
                    assert page.locator("#pending-note").count() == 0
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SCREENSHOT.with_name("study-running.png")), full_page=True)
            page.locator("#per-center").wait_for(timeout=30000)  # the page reloads itself when the launch ends
            assert page.inner_text("#study-state") == "finished"
            assert page.locator("#grid .badge", has_text="stored").count() == 3
            page.locator("figure.forest img").wait_for()
            assert page.evaluate("document.querySelector('figure.forest img').naturalWidth") > 0
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "report.zip"
            download.value.save_as(saved)
            names = zipfile.ZipFile(saved).namelist()
            assert "web-phase-report/per_center.csv" in names and "web-phase-report/report.html" in names

            viewer = browser.new_context()
            vpage = viewer.new_page()
            vpage.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            vpage.on("pageerror", lambda e: errors.append(str(e)))
            vpage.goto(viewer_link)
            assert vpage.locator("#launch-form").count() == 0  # no launch form for a viewer
            vpage.goto(base + "/studies/web-phase")
            assert vpage.locator("#grid .badge", has_text="stored").count() == 3
            assert vpage.locator("#cancel").count() == 0
            refused = viewer.request.post(
                base + "/studies",
                multipart={"protocol": {"name": "s.yaml", "mimeType": "application/x-yaml", "buffer": b"x"}},
            )
            assert refused.status == 403 and "viewer" in refused.text()
            assert viewer.request.get(base + "/api/v1/studies").json()[0]["state"] == "finished"
        finally:
            browser.close()
    assert errors == []
    assert zipfile.ZipFile(io.BytesIO(saved.read_bytes())).testzip() is None
