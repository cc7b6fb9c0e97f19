"""A site behind a hospital's outbound proxy: a real tinyproxy on 127.0.0.1 carries its SuperNode's traffic."""

from __future__ import annotations

import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.launcher import launch
from protocols.procs import Child, free_port, port_open, wait_for
from site_node.approvals import approve
from site_node.doctor import Level, run_checks
from site_node.home import SiteHome
from site_node.ingest import ingest
from site_node.synthetic.videos import synthesize_site

TINYPROXY = shutil.which("tinyproxy")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(TINYPROXY is None, reason="tinyproxy is not installed (`make test` installs it)"),
]
NAME = "behind-proxy"
CONF = """Port {port}
Listen 127.0.0.1
Timeout 600
LogFile "{log}"
LogLevel Connect
MaxClients 20
Allow 127.0.0.1
ConnectPort {hub_port}
DisableViaHeader Yes
"""


@dataclass
class ProxiedStudy:
    home: SiteHome
    launch_id: str
    proxy_log: Path
    hub_port: int
    proxy: Child


@pytest.fixture(scope="module")
def proxied(federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedStudy]:  # type: ignore[no-untyped-def]
    """tinyproxy (CONNECT only to the hub's port), one small site set to use it, and one study there."""
    d, port, hub_port = tmp_path_factory.mktemp("tinyproxy"), free_port(), federation.fed.public_port
    (d / "tinyproxy.conf").write_text(CONF.format(port=port, log=d / "tinyproxy.log", hub_port=hub_port))
    proxy = Child("tinyproxy", [str(TINYPROXY), "-d", "-c", str(d / "tinyproxy.conf")], d / "stdout.log")
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, "tinyproxy to listen", proxy)
        home = SiteHome(federation.fed.site_home(NAME, federation.model_dir))
        text = home.config_file.read_text()
        default = '# https_proxy = "http://proxy.hospital.example:3128"'
        assert default in text
        home.config_file.write_text(text.replace(default, f'https_proxy = "http://127.0.0.1:{port}"'))
        raw = federation.run / "raw" / NAME
        synthesize_site(raw, NAME, 5, 0.3, 55, seconds=12.0)
        ingest(home, raw, "cholec80", out_of_body="none", profile="demo")  # synthetic: no room scenes
        federation.fed.serve_site(NAME)
        protocol = federation.protocol("via-proxy", [NAME], {"deadline: 8m": "deadline: 4m"})
        approve(home.approved_dir, protocol)
        launch_id = launch(federation.hub, protocol, echo=lambda _: None)
        yield ProxiedStudy(home, launch_id, d / "tinyproxy.log", hub_port, proxy)
    finally:
        federation.fed.stop_site(NAME)
        proxy.stop()


def test_study_completes_through_the_proxy(federation, proxied: ProxiedStudy) -> None:  # type: ignore[no-untyped-def]
    store = federation.hub.store()
    assert store.launch(proxied.launch_id)["state"] == "finished"
    (job,) = store.jobs(proxied.launch_id)
    assert job["center"] == NAME and job["state"] == "stored", job
    frame = store.results_frame(proxied.launch_id)
    phase = frame[frame.task == "phase"]
    assert len(phase) > 0 and phase.n_videos.eq(5).all() and phase.suppressed.eq(False).all()


def test_the_proxy_saw_only_connect_to_the_hub(proxied: ProxiedStudy) -> None:
    requests = re.findall(r"Request \(file descriptor \d+\): (.*)", proxied.proxy_log.read_text())
    assert requests, "the SuperNode did not use the proxy"
    tunnel = re.compile(rf"CONNECT 127\.0\.0\.1:{proxied.hub_port} HTTP/1\.[01]")
    assert all(tunnel.fullmatch(r) for r in requests), set(requests)


def test_the_engine_log_tells_the_operator(proxied: ProxiedStudy) -> None:
    log = (proxied.home.logs_dir / "engine.log").read_text()
    for line in (
        f"connected to the hub at 127.0.0.1:{proxied.hub_port} through the proxy http://127.0.0.1:",
        "job received: evaluate round 0 of study via-proxy",
        "job finished: evaluate round 0 of study via-proxy",
    ):
        assert line in log, line
    for private in (".mp4", "video0", "ds-", "phase.txt"):  # no file names or data identifiers
        assert private not in log, private


def test_every_file_in_the_site_home_is_owner_only(proxied: ProxiedStudy) -> None:
    """After init, ingest and a job: site.toml, secrets, store, job folders and files, logs, the SuperNode's own."""
    paths = [proxied.home.root, *proxied.home.root.rglob("*")]
    assert any(p.parent == proxied.home.jobs_dir for p in paths) and proxied.home.reid_map.exists()
    loose = {
        str(p.relative_to(proxied.home.root)): f"{stat.S_IMODE(p.lstat().st_mode):04o}"
        for p in paths
        if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
    }
    assert not loose, loose


def test_doctor_takes_the_same_route(proxied: ProxiedStudy) -> None:
    """Through the proxy it passes; with the proxy stopped (the hub still up) it cannot reach the hub."""

    def connects() -> int:
        return len(re.findall(rf"CONNECT 127\.0\.0\.1:{proxied.hub_port} HTTP/1\.[01]", proxied.proxy_log.read_text()))

    before = connects()
    checks = {c.name: c for c in run_checks(proxied.home)}
    assert checks["hub"].level is Level.OK and "through the proxy http://127.0.0.1:" in checks["hub"].detail
    assert checks["node-key"].level is Level.OK and checks["clock"].level is Level.OK
    assert connects() == before + 1  # one tunnel: handshake, clock and key question
    proxied.proxy.stop()
    failed = {c.name: c.detail for c in run_checks(proxied.home) if c.level is Level.FAIL}
    assert set(failed) == {"hub", "node-key"}, failed
    assert f"cannot reach the hub at 127.0.0.1:{proxied.hub_port} through the proxy http://127.0.0.1:" in failed["hub"]
