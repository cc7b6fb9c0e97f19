"""`hub studies list`, `hub study show|cancel|extend|rerun` on a real SQLite store, through the CLI's main()."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.home import HubHome, init_hub
from hub.store_rounds import StudyRounds
from hub.studies import submit_study
from protocols.states import LaunchState, SiteState

PROTOCOL = """
study: {id: weeks, version: "1", title: A study of weeks}
sites: [a, b, c]
model: {manifest_sha256: "%s"}
tasks: [phase]
round_plan: {rounds: 2, deadline: 14d, min_sites: 2}
""" % ("ab" * 32)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_hub(tmp_path_factory.mktemp("hub") / "hub").root


@pytest.fixture
def home(hub_root: Path, tmp_path: Path) -> HubHome:
    """A fresh store per test in the module's hub home (certificates are made once)."""
    return HubHome(hub_root, store_url=f"sqlite:///{tmp_path / 'results.db'}")


def cli(home: HubHome, *args: str) -> int:
    return main([*args, "--home", str(home.root), "--db", str(home.store_url)])


def launched(home: HubHome, tmp_path: Path) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(PROTOCOL)
    return submit_study(home, path)


def test_launch_registers_and_returns_and_list_shows_it(
    home: HubHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(PROTOCOL)
    for node, site in enumerate("abc", start=1):  # registered (the roster check), none connected: a warning
        home.store().add_site(site, node, f"key-{site}")
    assert cli(home, "launch", "--protocol", str(path)) == 0
    out = capsys.readouterr().out
    assert "study weeks: launch weeks-" in out and "registered" in out
    assert "no `hub serve` runs the studies" in out  # nothing serves this home: it says so, and returns
    (launch,) = home.store().launches_of("weeks")
    assert launch["state"] == LaunchState.PENDING.value
    assert cli(home, "studies", "list") == 0
    assert f"weeks\tpending\t0/0 site jobs stored\t{launch['launch_id']}" in capsys.readouterr().out
    assert cli(home, "launch", "--protocol", str(path)) == 1  # one open launch per study
    assert "already has an open launch" in capsys.readouterr().err


def test_show_lists_rounds_deadlines_and_jobs(
    home: HubHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launch_id = launched(home, tmp_path)
    rounds = StudyRounds(home.store())
    rounds.set_running(launch_id, "77")
    rounds.open_round(launch_id, 0, "evaluate", 14 * 86400, 1_790_000_000.0)
    home.store().set_job(launch_id, 0, "a", job_id="j-a", state=SiteState.RUNNING.value)
    assert cli(home, "study", "show", "weeks") == 0
    out = capsys.readouterr().out
    assert f"launch {launch_id}: running" in out
    assert "round 0 evaluate: deadline 2026-10-05 14:13 UTC, open" in out
    assert "round 0 evaluate a: running [job j-a]" in out


def test_extend_moves_an_open_round_and_names_a_closed_one(
    home: HubHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launch_id = launched(home, tmp_path)
    rounds = StudyRounds(home.store())
    rounds.set_running(launch_id, None)
    first = rounds.open_round(launch_id, 0, "evaluate", 14 * 86400, 1_790_000_000.0)["deadline_at"]
    assert cli(home, "study", "extend", "weeks", "--round", "0", "--by", "7d") == 0
    assert rounds.deadline(launch_id, 0, "evaluate") == first + 7 * 86400
    assert "deadline now" in capsys.readouterr().out
    assert cli(home, "study", "extend", "weeks", "--round", "1", "--by", "7d") == 1
    assert "has no open round 1 (open rounds: [0])" in capsys.readouterr().err
    assert cli(home, "study", "extend", "weeks", "--round", "0", "--by", "a week") == 2
    assert "--by must be a duration such as 14d, 36h or 90m" in capsys.readouterr().err


def test_cancel_then_rerun_rules(home: HubHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    launch_id = launched(home, tmp_path)
    assert cli(home, "study", "rerun", "weeks", "--round", "0", "--sites", "a") == 1
    assert "launch " + launch_id + " is pending; rerun sites of a launch that has ended" in capsys.readouterr().err
    assert cli(home, "study", "cancel", "weeks") == 0
    assert home.store().launch(launch_id)["state"] == LaunchState.CANCELLED.value
    assert cli(home, "study", "cancel", "weeks") == 1  # nothing open any more
    store = home.store()
    store.finish_launch(launch_id, LaunchState.FINISHED)
    store.set_job(launch_id, 0, "a", job_id="j-a", state=SiteState.STORED.value)
    store.set_job(launch_id, 0, "b", job_id="j-b", state=SiteState.REJECTED.value)
    assert cli(home, "study", "rerun", "weeks", "--round", "0", "--sites", "a") == 1
    assert "its result is stored, and a released result is never asked for twice" in capsys.readouterr().err
    assert cli(home, "study", "rerun", "weeks", "--round", "0", "--sites", "b") == 1
    assert "site 'b' is rejected in round 0 (its data owner decided)" in capsys.readouterr().err
    assert cli(home, "study", "rerun", "weeks", "--round", "5", "--sites", "c") == 2
    assert "--round must be one of [0, 1], got 5" in capsys.readouterr().err
    assert cli(home, "study", "rerun", "weeks", "--round", "0", "--sites", "zz") == 2
    assert "'zz' is not a site of this study" in capsys.readouterr().err
    assert store.launch(launch_id)["state"] == LaunchState.FINISHED.value  # every refusal changed nothing
    assert cli(home, "study", "rerun", "weeks", "--round", "0", "--sites", "c", "--by", "36h") == 0
    assert "c asked again as job" in capsys.readouterr().out
    assert store.launch(launch_id)["state"] == LaunchState.PENDING.value  # `hub serve` picks it up
    assert {j["center"]: j["state"] for j in store.jobs(launch_id)}["c"] == SiteState.PENDING.value
