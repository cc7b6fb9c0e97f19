"""`site_node doctor` against the real loopback hub: a demo site passes; each broken set-up fails with its own line."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from protocols.procs import free_port
from site_node import sandbox
from site_node.doctor import Check, Level, run_checks
from site_node.home import SiteHome

pytestmark = pytest.mark.integration


def _doctor(home: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "site_node.cli", "doctor", "--home", str(home)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if c.level is Level.FAIL}


def test_doctor_passes_on_a_demo_site(federation) -> None:  # type: ignore[no-untyped-def]
    home = federation.run / "sites" / federation.sites[0].name
    result = subprocess.run(
        [sys.executable, "-m", "site_node.cli", "doctor", "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    levels = {c["name"]: c["level"] for c in report["checks"]}
    assert report["ok"] and "fail" not in levels.values(), report
    for name in ("python", "home", "secrets", "model", "sandbox", "hub", "node-key", "certificates", "clock", "disk"):
        assert levels[name] == "ok", (name, report)
    assert levels["gpu"] in ("ok", "warn")  # no GPU here: the CPU fallback is stated as a warning
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert "knows this node key" in details["node-key"]
    assert "manifest sha256" in details["model"]


@pytest.fixture(scope="module")
def spare(federation) -> SiteHome:  # type: ignore[no-untyped-def]
    """A registered site home that is not served: each case breaks one thing and puts it back."""
    return SiteHome(federation.fed.site_home("doctor-patient", federation.model_dir))


def _expired_study_ca(federation, home: SiteHome) -> None:  # type: ignore[no-untyped-def]
    """The study CA itself (same name and key, from the hub's pki) with a validity that ended yesterday."""
    pki = federation.hub.root / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.issuer)
        .public_key(ca.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in ca.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(key, hashes.SHA384())  # type: ignore[arg-type]
    home.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _hub_down(federation, home: SiteHome) -> None:  # type: ignore[no-untyped-def]
    port = federation.fed.public_port
    text = home.config_file.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    home.config_file.write_text(text)


CASES: dict[str, tuple[Callable[..., None], dict[str, str]]] = {
    "secret-mode": (
        lambda fed, home: home.key_file.chmod(0o644),
        {"secrets": "secrets/site.key has mode 0644 (others may read it), expected 0600"},
    ),
    "hub-unreachable": (
        _hub_down,
        {"hub": "cannot reach the hub at 127.0.0.1:", "node-key": "not checked: the hub is unreachable"},
    ),
    "expired-certificate": (
        _expired_study_ca,
        {
            "certificates": "study CA expired on",
            "hub": "TLS verification failed: certificate has expired",
            "node-key": "not checked",
        },
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_doctor_names_what_is_broken(federation, spare: SiteHome, case: str) -> None:  # type: ignore[no-untyped-def]
    break_it, expected = CASES[case]
    saved = {p: p.read_bytes() for p in (spare.config_file, spare.ca_file)}
    assert not _failed(run_checks(spare)), "the spare home starts healthy"
    try:
        break_it(federation, spare)
        failed = _failed(run_checks(spare))
        assert set(failed) == set(expected), failed
        for name, text in expected.items():
            assert text in failed[name], (name, failed[name])
    finally:
        spare.key_file.chmod(0o600)
        for path, data in saved.items():
            path.write_bytes(data)


def test_doctor_fails_for_an_unregistered_key(federation) -> None:  # type: ignore[no-untyped-def]
    home = SiteHome(federation.fed.site_home("doctor-stranger", federation.model_dir, register=False))
    failed = _failed(run_checks(home))
    assert set(failed) == {"node-key"} and "does not know this node key" in failed["node-key"], failed


@pytest.mark.skipif(not sandbox.grants().files, reason="needs Landlock to deny the model directory, even to root")
def test_doctor_fails_for_an_unreadable_model_dir(spare: SiteHome) -> None:
    """The kernel denies the model directory (Landlock holds for root too, where chmod would not)."""
    cfg = spare.config()
    assert cfg.model_dir is not None
    jail = [sys.executable, "-m", "site_node.sandbox"]
    for path in sandbox.runtime_read_paths():
        jail += ["--read", str(path)]
    jail += ["--list", str(sandbox.code_root()), "--write", str(spare.root), "--"]
    result = _doctor(spare.root, *jail)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert lines == [f"FAIL  model         model directory {cfg.model_dir} is not readable: Permission denied"], (
        result.stdout
    )
