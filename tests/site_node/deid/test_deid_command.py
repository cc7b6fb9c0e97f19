"""The `deid` subcommand wired into an argparse parser as the site_node CLI does: exit codes and messages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from deid_fixtures import frames_for, make_video, write_key

from site_node.deid.command import register


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
