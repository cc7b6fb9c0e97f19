"""A hub home with a registered study, and a stand-in for the coordinator's store writes as a round proceeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hub.home import HubHome, init_hub
from hub.store import ResultsStore
from protocols.results import ResultRow

REPO = Path(__file__).resolve().parents[3]
SITES = ("lakeside-university", "mercy-general", "st-elsewhere")
# (accuracy, ci_low, ci_high, videos, frames) per site: made up for the test, not computed by any model
PHASE_ACCURACY = {
    "lakeside-university": (0.62, 0.51, 0.72, 8, 240),
    "mercy-general": (0.55, 0.43, 0.66, 6, 180),
    "st-elsewhere": (0.71, 0.60, 0.80, 7, 210),
}
ROUND_STATES = ("queued", "running", "done", "stored")  # what hub/coordinator.py records for a site that delivers


def write_protocol(folder: Path, study_id: str = "web-phase") -> Path:
    """The shipped example protocol, cut down to the phase task, under a new study id."""
    data = yaml.safe_load((REPO / "protocols" / "studies" / "surgbench-external.yaml").read_text(encoding="utf-8"))
    data["study"]["id"] = study_id
    data["study"]["title"] = "Phase recognition across three centers"
    data["tasks"] = [t for t in data["tasks"] if t["name"] == "phase"]
    path = folder / f"{study_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def play_round(store: ResultsStore, launch_id: str, study_id: str) -> Iterator[str]:
    """Record each site's job states and released numbers as the coordinator does (store.set_job, add_results,
    finish_launch), one state for all sites per step, so a watcher sees the grid move."""
    store.set_launch_state(launch_id, "running")  # what `hub serve` does when it picks the launch up
    for state in ROUND_STATES:
        for site in SITES:
            job_id = f"{launch_id}.r0.evaluate.{site}"
            store.set_job(launch_id, 0, site, kind="evaluate", job_id=job_id, state=state, software_version="0.1.0")
            if state == "stored":
                est, lo, hi, videos, frames = PHASE_ACCURACY[site]
                row = ResultRow(
                    study_id, 0, site, "evaluate", "phase", "accuracy", est, lo, hi, videos, frames, 0.0, False
                )
                store.add_results(launch_id, [row])
        yield state
    store.finish_launch(launch_id, "finished")


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    return write_protocol(tmp_path)


@pytest.fixture
def hub_home(tmp_path: Path, store_url: str) -> HubHome:
    """A hub home whose results store is at `store_url` (SQLite file or the test PostgreSQL server)."""
    init_hub(tmp_path / "hub", store_url=store_url)
    return HubHome(tmp_path / "hub")


@pytest.fixture
def round_player() -> object:
    return play_round
