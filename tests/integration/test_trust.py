"""Trust between hub and sites on the shared TLS + node-auth federation."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from hub.launcher import launch
from hub.pki import make_ca
from hub.superlink import CONNECTION, flwr
from protocols.procs import wait_for
from protocols.study import load_protocol
from protocols.tasks import load_task
from site_node.approvals import approve
from site_node.audit import AuditLog, verify
from site_node.home import SiteHome

pytestmark = pytest.mark.integration
ROGUE_APP = Path(__file__).parent / "rogue_app"


def _site_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "site_node.cli", *args], capture_output=True, text=True, timeout=120)


def _post(url: str, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_public_port_refuses_control_while_loopback_cli_works(federation) -> None:  # type: ignore[no-untyped-def]
    hub = federation.hub
    base = f"https://127.0.0.1:{federation.fed.public_port}"
    for path in (
        "/v1/control/list-runs",
        "/v1/control/start-run",
        "/v1/runtime/pull-messages",
        "/v1/fleet/../control/list-runs",
        "/V1/control/list-runs",
    ):
        assert _post(base + path, hub.ca_cert) in (403, 404), path
    assert "runs" in flwr(hub, ["ls", CONNECTION])


def _serve_until_exit(federation, name: str, timeout: float = 90) -> str:  # type: ignore[no-untyped-def]
    child = federation.fed.serve_site(name)
    wait_for(lambda: not child.alive(), timeout, f"{name}'s SuperNode to be refused", None)
    assert child.proc.returncode != 0
    return (federation.run / "sites" / name / "logs" / "supernode.log").read_text(errors="replace")


def test_unregistered_key_is_refused(federation) -> None:  # type: ignore[no-untyped-def]
    federation.fed.site_home("unregistered", None, register=False)
    log = _serve_until_exit(federation, "unregistered")
    assert "412" in log or "not" in log.lower()


def test_site_without_the_study_ca_cannot_connect(federation) -> None:  # type: ignore[no-untyped-def]
    home = SiteHome(federation.fed.site_home("wrong-ca", None))
    other = federation.run / "other-ca"
    other.mkdir()
    make_ca(other / "ca.crt", other / "ca.key", "someone else")
    home.ca_file.write_bytes((other / "ca.crt").read_bytes())  # init copied the study CA into the home
    log = _serve_until_exit(federation, "wrong-ca")
    assert "certificate" in log.lower() or "ssl" in log.lower()


def test_revoked_site_is_refused(federation) -> None:  # type: ignore[no-untyped-def]
    federation.fed.site_home("revokee", None)
    child = federation.fed.serve_site("revokee")
    hub = federation.hub
    node_id = next(str(n) for n, name in hub.store().site_nodes().items() if name == "revokee")

    def online() -> bool:
        nodes = flwr(hub, ["supernode", "list", CONNECTION]).get("nodes", [])
        return any(n["node-id"] == node_id and n["status"] == "online" for n in nodes)

    wait_for(online, 60, "the site's SuperNode to come online")
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "sites", "remove", "revokee", "--home", str(hub.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "revokee" not in hub.store().site_nodes().values()
    wait_for(lambda: not child.alive(), 90, "the revoked SuperNode to be refused", None)


def _online(hub) -> set[str]:  # type: ignore[no-untyped-def]
    """Names of the sites whose SuperNodes the SuperLink sees online."""
    names = {str(node): name for node, name in hub.store().site_nodes().items()}
    nodes = flwr(hub, ["supernode", "list", CONNECTION]).get("nodes", [])
    return {names.get(str(n["node-id"]), str(n["node-id"])) for n in nodes if n["status"] == "online"}


def test_only_approved_bundles_run_and_stay_sandboxed(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The hub sends a bundle the sites never approved: it runs nowhere. One site approves it: there it runs,
    and the sandbox still keeps the site home out of its reach."""
    approver = federation.sites[0].name
    home = SiteHome(federation.run / "sites" / approver)
    serving = {s.name for s in federation.sites[1:]} | {federation.broken, federation.small}
    wait_for(lambda: _online(federation.hub) >= serving | {approver}, 120, "every serving site to be online")
    fab = tmp_path / "rogue.fab"
    fab.write_bytes(build_fab_from_disk(ROGUE_APP))
    approved = _site_cli("apps", "approve", str(fab), "--home", str(home.root))
    assert approved.returncode == 0, approved.stderr
    out = tmp_path / "rogue.json"
    try:
        flwr(federation.hub, ["run", str(ROGUE_APP), CONNECTION, "--run-config", f'out="{out}"'])
        wait_for(out.exists, 180, "the rogue app's report")
    finally:
        _site_cli("apps", "revoke", hashlib.sha256(fab.read_bytes()).hexdigest(), "--home", str(home.root))
    names = {str(node): name for node, name in federation.hub.store().site_nodes().items()}
    found = {names.get(node, node): reply for node, reply in json.loads(out.read_text()).items()}
    reply = found.pop(approver)
    assert reply["own-token"] == 1  # the check can see what it may see ...
    assert all(reply[k] == 0 for k in reply if k != "own-token"), reply  # ... and nothing of the site home
    refused = {name: r["error"] for name, r in found.items() if name in serving}
    assert set(refused) == serving, found  # every other serving site replied with an error ...
    assert all("PermissionError" in reason for reason in refused.values()), refused  # ... at the bundle's install
    for name in serving:  # and nothing of the rogue bundle was installed there
        apps = federation.run / "sites" / name / "clientapp" / "flwr" / "apps"
        assert not [p for p in apps.iterdir() if p.name.startswith("someone-else.")], name


def test_per_frame_protocol_is_refused_and_recorded(federation) -> None:  # type: ignore[no-untyped-def]
    site = federation.sites[0].name
    protocol = federation.protocol(
        "per-frame", [site], {"outputs: aggregate": "outputs: per_frame", "deadline: 8m": "deadline: 3m"}
    )
    launch_id = launch(federation.hub, protocol, echo=lambda _: None)
    job = federation.hub.store().jobs(launch_id)[0]
    # Refused by its hash alone: the site never parsed the hub's text, and only the code crossed the wire.
    assert job["state"] == "refused" and job["detail"].startswith("protocol-not-approved")
    home = SiteHome(federation.run / "sites" / site)
    refusals = [
        e for e in AuditLog(home.audit_log).entries() if e["event"] == "refused" and e.get("job_id") == job["job_id"]
    ]
    assert refusals and refusals[0]["reason"] == "protocol-not-approved"
    # The text waits for the operator, whose review shows what it asks and refuses to approve it.
    digest = load_protocol(protocol).content_hash
    assert digest in _site_cli("protocols", "pending", "--home", str(home.root)).stdout
    shown = _site_cli("protocols", "show", digest, "--home", str(home.root))
    assert shown.returncode == 0 and "per_frame" in shown.stdout, shown.stderr
    refused = _site_cli("protocols", "approve", digest, "--home", str(home.root))
    assert refused.returncode == 1 and "per_frame" in refused.stderr and "Traceback" not in refused.stderr


def test_manual_release_and_small_cell_suppression(federation) -> None:  # type: ignore[no-untyped-def]
    name = federation.small
    home = SiteHome(federation.run / "sites" / name)
    protocol = federation.protocol("manual-small", [name], {"deadline: 8m": "deadline: 4m"})
    approve(home.approved_dir, protocol)
    store = federation.hub.store()
    done: dict[str, str] = {}
    thread = threading.Thread(
        target=lambda: done.setdefault("id", launch(federation.hub, protocol, echo=lambda _: None))
    )
    thread.start()

    def awaiting() -> bool:
        launches = [j for j in store.jobs_for_study("manual-small") if j["state"] == "awaiting_approval"]
        return bool(launches)

    wait_for(awaiting, 180, "the hub to see the site awaiting approval")
    job = store.jobs_for_study("manual-small")[0]
    job_id = job["job_id"]
    time.sleep(4)  # several polls while waiting: nothing may leave before approval
    assert store.results_frame(job["launch_id"]).empty
    listed = _site_cli("releases", "list", "--home", str(home.root))
    assert job_id in listed.stdout
    shown = json.loads(_site_cli("releases", "show", job_id, "--json", "--home", str(home.root)).stdout)
    assert all(rec["values"] == {"suppressed": 1} for n, rec in shown.items() if n.startswith("metric."))
    approved = _site_cli("releases", "approve", job_id, "--home", str(home.root))
    assert approved.returncode == 0, approved.stderr
    thread.join(timeout=120)
    frame = store.results_frame(done["id"])
    per_center = sum(len(load_task(t).metrics) for t in set(frame.task))  # one row per task metric
    assert "phase" in set(frame.task) and len(frame) == per_center
    assert frame.suppressed.all() and frame.estimate.isna().all()
    assert verify(home.audit_log) > 0
    events = [e["event"] for e in AuditLog(home.audit_log).entries()]
    assert "release-approved" in events


def test_audit_verify_cli_fails_at_edited_entry(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site_log = federation.run / "sites" / federation.sites[0].name / "audit" / "audit.jsonl"
    ok = _site_cli("audit", "verify", "--log", str(site_log))
    assert ok.returncode == 0, ok.stderr
    copy = tmp_path / "audit.jsonl"
    lines = site_log.read_text().splitlines()
    lines[1] = (
        lines[1].replace('"request"', '"requesT"', 1) if '"request"' in lines[1] else lines[1].replace("Z", "z", 1)
    )
    copy.write_text("\n".join(lines) + "\n")
    bad = _site_cli("audit", "verify", "--log", str(copy))
    assert bad.returncode != 0 and ":2:" in bad.stderr and "Traceback" not in bad.stderr
