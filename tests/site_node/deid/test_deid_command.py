"""The `deid` subcommand wired into an argparse parser as the site_node CLI does: exit codes and messages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from deid_fixtures import frames_for, make_video, write_key

from site_node.audit import AuditLog, verify
from site_node.deid.command import AUDIT_NAME, register
from site_node.home import init_home


def _main(argv: list[str], home: Path | None = None) -> int:
    parser = argparse.ArgumentParser(prog="site_node")
    parser.add_argument("--home", type=Path, default=home)
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    return make_video(tmp_path / "DOE_JOHNATHAN.mp4", frames_for(10))


def test_all_out_exits_0_and_writes_report(tmp_path: Path, clip: Path, key_file: Path) -> None:
    argv = ["deid", str(clip), "--out", str(tmp_path / "out"), "--key-file", str(key_file), "--no-progress"]
    assert _main([*argv, "--profile", "demo"]) == 0  # a synthetic clip from no known device: the demo's choice
    report = json.loads((tmp_path / "out" / "deid-report.json").read_text())
    assert report["summary"]["ok"] == 1 and report["entries"][0]["status"] == "ok"
    assert "DOE" not in (tmp_path / "out" / "deid-report.json").read_text()
    # No site home: the run is recorded in a hash-chained log beside its outputs, counts only.
    log = tmp_path / "out" / AUDIT_NAME
    assert verify(log) == 1
    (entry,) = AuditLog(log).entries()
    assert entry["event"] == "deid" and entry["files"] == {"video.ok": 1} and entry["key"] == "key file"
    assert entry["profile"] == "demo" and entry["profile_digest"] == report["profile_digest"]
    assert "DOE" not in log.read_text() and str(clip.parent) not in log.read_text()


def test_some_quarantined_exits_3(tmp_path: Path, clip: Path, key_file: Path) -> None:
    (tmp_path / "cut.mp4").write_bytes(clip.read_bytes()[:500])
    code = _main(
        [
            "deid",
            str(clip),
            str(tmp_path / "cut.mp4"),
            "--out",
            str(tmp_path / "out"),
            "--key-file",
            str(key_file),
            "--no-progress",
            "--profile",
            "demo",
        ]
    )
    assert code == 3 and len(list((tmp_path / "out" / "quarantine").glob("*.json"))) == 1
    (entry,) = AuditLog(tmp_path / "out" / AUDIT_NAME).entries()
    assert entry["files"] == {"video.ok": 1, "video.quarantined": 1}
    reason = json.loads(next((tmp_path / "out" / "quarantine").glob("*.json")).read_text())["reason"]
    assert reason not in (tmp_path / "out" / AUDIT_NAME).read_text()  # free text stays in the report


def test_run_with_a_site_home_is_recorded_in_the_sites_audit_log(tmp_path: Path, clip: Path) -> None:
    home = init_home(tmp_path / "site", "site-a")
    argv = ["deid", str(clip), "--out", str(tmp_path / "out"), "--no-progress", "--profile", "demo"]
    assert _main(argv, home=home.root) == 0
    assert [e["event"] for e in AuditLog(home.audit_log).entries()] == ["deid"]
    assert AuditLog(home.audit_log).entries()[0]["key"] == "site key"
    assert not (tmp_path / "out" / AUDIT_NAME).exists()


def test_run_that_cannot_be_audited_exits_1(
    tmp_path: Path, clip: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out" / AUDIT_NAME).mkdir(parents=True)  # the log path is taken: the entry cannot be written
    argv = ["deid", str(clip), "--out", str(tmp_path / "out"), "--key-file", str(key_file), "--no-progress"]
    assert _main([*argv, "--profile", "demo"]) == 1
    assert "could not be audited" in capsys.readouterr().err


def test_default_key_comes_from_the_site_home(tmp_path: Path, clip: Path) -> None:
    (tmp_path / "home" / "secrets").mkdir(parents=True)
    write_key(tmp_path / "home" / "secrets" / "site.key")
    argv = ["deid", str(clip), "--out", str(tmp_path / "out"), "--no-progress", "--profile", "demo"]
    assert _main(argv, home=tmp_path / "home") == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-input", "does-not-exist"),
        ("short-key", "at least 32 are required"),
        ("no-key", "no --key-file"),
        ("bad-profile", "unknown de-identification profile"),
        ("out-inside-input", "must not contain one another"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(
    tmp_path: Path, clip: Path, key_file: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    argv = {
        "missing-input": [str(tmp_path / "does-not-exist"), "--key-file", str(key_file)],
        "short-key": [str(clip), "--key-file", str(short)],
        "no-key": [str(clip)],
        "bad-profile": [str(clip), "--key-file", str(key_file), "--profile", "nosuchprofile"],
        "out-inside-input": [str(tmp_path), "--key-file", str(key_file)],
    }[case]
    out = tmp_path / "out" if case != "out-inside-input" else tmp_path / "sub" / "out"
    assert _main(["deid", *argv, "--out", str(out), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
