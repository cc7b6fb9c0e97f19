"""`site_node doctor`: its local checks on a real site home (the hub checks: tests/integration/test_site_doctor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from site_node.cli import main
from site_node.doctor import Level, check_home, check_model, check_secrets, run_checks
from site_node.doctor_hub import _activation_body
from site_node.home import SiteHome, init_home


@pytest.fixture
def home(tmp_path: Path, tiny_model_dir: Path) -> SiteHome:
    return init_home(tmp_path / "site", "site-a", model_dir=tiny_model_dir)


CASES = {
    "home-mode": (lambda h: h.root.chmod(0o755), check_home, "has mode 0755, expected 0700"),
    "job-file-mode": (
        lambda h: ((h.jobs_dir / "j.json").write_text("{}"), (h.jobs_dir / "j.json").chmod(0o644)),
        check_home,
        "1 file(s) or folder(s) others may read, e.g. jobs/j.json (0644)",
    ),
    "node-key-mode": (lambda h: h.node_key.chmod(0o640), check_secrets, "secrets/node.key has mode 0640"),
    "token-missing": (lambda h: h.token_file.unlink(), check_secrets, "secrets/engine.token is missing"),
    "reid-map-mode": (
        lambda h: (h.reid_map.write_text("{}"), h.reid_map.chmod(0o644)),
        check_secrets,
        "secrets/reid-map.json has mode 0644",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_local_check_fails_with_its_line(home: SiteHome, case: str) -> None:
    breaks, check, text = CASES[case]
    assert check(home).level is Level.OK
    breaks(home)
    result = check(home)
    expected = Level.WARN if case == "job-file-mode" else Level.FAIL  # a loose file inside the 0700 home warns
    assert result.level is expected and text in result.detail and result.fix, result


def test_model_dir_missing_and_present(home: SiteHome, tmp_path: Path) -> None:
    result = check_model(home.config())
    assert result.level is Level.OK and "manifest sha256 " in result.detail
    home.config_file.write_text(home.config_file.read_text().replace(str(home.config().model_dir), str(tmp_path / "x")))
    result = check_model(home.config())
    assert result.level is Level.FAIL and result.detail == f"model directory {tmp_path / 'x'} does not exist"


def test_broken_site_toml_is_one_fail_line(home: SiteHome, capsys) -> None:  # type: ignore[no-untyped-def]
    home.config_file.write_text(home.config_file.read_text().replace('release = "auto"', 'release = "sometimes"'))
    assert main(["doctor", "--home", str(home.root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    failed = {c["name"]: c["detail"] for c in report["checks"] if c["level"] == "fail"}
    assert not report["ok"] and list(failed) == ["config"], failed
    assert "[site] release must be 'auto' or 'manual', got 'sometimes'" in failed["config"]


def test_no_ca_is_a_hub_fail(home: SiteHome) -> None:
    failed = {c.name: c.detail for c in run_checks(home) if c.level is Level.FAIL}
    assert failed == {"hub": "no study CA file (got None)"}


def test_activation_probe_is_a_valid_flower_message() -> None:
    from flwr.proto.fleet_pb2 import ActivateNodeRequest

    pem = b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 300 + b"\n-----END PUBLIC KEY-----\n"
    parsed = ActivateNodeRequest.FromString(_activation_body(pem))
    assert parsed.public_key == pem and parsed.heartbeat_interval == -1.0  # out of range: the hub changes nothing
