"""A site's node key and the hub's server certificate are both rotated while a study is open; it completes."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

import protocols
from hub.home import HubHome
from hub.launcher import launch
from hub.superlink import CONNECTION, flwr
from protocols.keys import fingerprint
from protocols.procs import wait_for
from site_node.approvals import approve
from site_node.audit import AuditLog
from site_node.home import SiteHome
from site_node.ingest import ingest
from site_node.synthetic.videos import synthesize_site

pytestmark = pytest.mark.integration
SITE = "rotating-site"
# Phase recognition only, on five 12-second videos: the rotation, not the tasks, is under test here.
_TASK_LINES = (Path(protocols.__file__).parent / "studies" / "demo.yaml.tmpl").read_text().splitlines()
PHASE_ONLY = {
    "deadline: 8m": "deadline: 5m",
    **{f"{line}\n": "" for line in _TASK_LINES if line.startswith("  - {name: ") and "{name: phase," not in line},
}


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


def _served_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _node_status(hub: HubHome, node_id: str) -> str:
    nodes = flwr(hub, ["supernode", "list", CONNECTION]).get("nodes", [])
    return next((str(n["status"]) for n in nodes if n["node-id"] == node_id), "absent")


def test_key_and_certificate_rotated_during_an_open_study(federation) -> None:
    fed, hub = federation.fed, federation.hub
    home = SiteHome(fed.site_home(SITE, federation.model_dir))
    synthesize_site(federation.run / "raw-rot", SITE, 5, 0.3, 55, seconds=12.0)
    ingest(home, federation.run / "raw-rot", "cholec80", out_of_body="none", profile="demo")
    protocol = federation.protocol("itest-rotation", [SITE], PHASE_ONLY)
    approve(home.approved_dir, protocol)
    fed.serve_site(SITE)
    store = hub.store()
    old_node = next(str(n) for n, name in store.site_nodes().items() if name == SITE)
    old_serial = _served_serial(fed.public_port, hub.ca_cert)
    done: dict[str, str] = {}
    study = threading.Thread(target=lambda: done.setdefault("id", launch(hub, protocol, echo=lambda _: None)))
    study.start()

    def submitted() -> bool:  # the site took the job over its old key; the study is open
        return any(j["state"] not in ("pending",) for j in store.jobs_for_study("itest-rotation"))

    wait_for(submitted, 180, "the site to accept the study's job")
    # The site makes its new key while it still serves with the old one.
    rotated = _cli("site_node.cli", "keys", "rotate", "--home", str(home.root)).stdout
    pub = SiteHome(home.root).secrets_dir / "node.key.next.pub"
    new_fp = fingerprint(pub.read_text())
    assert new_fp in rotated and f"hub sites rotate {SITE} node.key.next.pub" in rotated
    fed.stop_site(SITE)  # the operator stops the service for the switch; the hub's job stays open
    assert all(j["state"] != "stored" for j in store.jobs_for_study("itest-rotation"))

    confirmed = _cli("hub.cli", "sites", "rotate", SITE, str(pub), "--home", str(hub.root)).stdout
    assert new_fp in confirmed
    new_node = next(str(n) for n, name in store.site_nodes().items() if name == SITE)
    assert new_node != old_node and _node_status(hub, old_node) != "online"
    renewed = _cli("hub.cli", "pki", "renew", "--home", str(hub.root)).stdout
    assert "same study CA" in renewed
    wait_for(lambda: _served_serial(fed.public_port, hub.ca_cert) != old_serial, 30, "the renewed certificate")

    _cli("site_node.cli", "keys", "activate", "--home", str(home.root), "--fingerprint", new_fp)
    fed.serve_site(SITE)
    study.join(timeout=300)
    assert not study.is_alive(), "the study did not finish"
    assert store.launch(done["id"])["state"] == "finished"
    jobs = store.jobs(done["id"])
    assert [j["state"] for j in jobs] == ["stored"], jobs
    frame = store.results_frame(done["id"])
    assert set(frame.center) == {SITE} and set(frame.task) == {"phase"}
    assert _node_status(hub, new_node) == "online"
    events = [e["event"] for e in AuditLog(home.audit_log).entries()]
    assert "node-key-next" in events and "node-key-activated" in events
