"""A real study over a real federation: SuperLink, proxy, four SuperNodes and site engines on 127.0.0.1."""

from __future__ import annotations

import re
import sqlite3

import pytest

from hub.launcher import launch
from protocols.tasks import load_task
from site_node.approvals import approve
from site_node.home import SiteHome
from site_node.jobs import JobStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(federation):  # type: ignore[no-untyped-def]
    names = [s.name for s in federation.sites] + [federation.broken]
    protocol = federation.protocol("itest-phase", names)
    for name in names:
        approve(SiteHome(federation.run / "sites" / name).approved_dir, protocol)
    launch_id = launch(federation.hub, protocol, echo=lambda _: None)
    return launch_id


def test_study_completes_with_failing_site_recorded(federation, study) -> None:  # type: ignore[no-untyped-def]
    store = federation.hub.store()
    assert store.launch(study)["state"] == "finished"
    jobs = {j["center"]: j for j in store.jobs(study)}
    assert jobs[federation.broken]["state"] == "failed"
    # Only the reason code crosses the wire; the site's job file keeps the text for its operator.
    assert jobs[federation.broken]["detail"] == "no-usable-data (ask the site's operator for details)"
    site_job = JobStore(SiteHome(federation.run / "sites" / federation.broken).jobs_dir).get(
        jobs[federation.broken]["job_id"]
    )
    assert site_job is not None and "no usable videos with phase labels" in site_job.detail
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", j["job_id"]) for j in jobs.values())
    for site in federation.sites:
        assert jobs[site.name]["state"] == "stored", jobs[site.name]


def test_accuracy_falls_with_shift_within_bounds(federation, study) -> None:  # type: ignore[no-untyped-def]
    frame = federation.hub.store().results_frame(study)
    acc = frame[frame.metric == "accuracy"].set_index("center")["estimate"]
    by_shift = [acc[s.name] for s in sorted(federation.sites, key=lambda s: s.shift)]
    chance = 1 / 7
    assert all(chance + 0.1 <= a <= 0.9 for a in by_shift), by_shift
    assert by_shift == sorted(by_shift, reverse=True), by_shift
    for metric in ("accuracy", "f1", "jaccard", "precision", "recall"):
        rows = frame[frame.metric == metric]
        assert len(rows) == 3 and rows.suppressed.eq(False).all()
        assert (rows.ci_low <= rows.estimate).all() and (rows.estimate <= rows.ci_high).all()
        assert rows.parse_fail_rate.between(0, 1).all() and rows.n_videos.eq(6).all()


def test_hub_database_holds_only_aggregates(federation, study) -> None:  # type: ignore[no-untyped-def]
    db = federation.hub.root / "state" / "results.db"
    con = sqlite3.connect(db)
    text = "\n".join(
        str(v)
        for table in ("sites", "studies", "launches", "site_jobs", "results")
        for row in con.execute(f"SELECT * FROM {table}")
        for v in row
    )  # noqa: S608 - fixed names
    con.close()
    for forbidden in (".mp4", "video0", "phase_annotations", "Frame\t", "<answer>", "<think>"):
        assert forbidden not in text, forbidden
    con = sqlite3.connect(db)
    results = con.execute(
        "SELECT COUNT(*), COUNT(DISTINCT center) FROM results WHERE launch_id = ?", (study,)
    ).fetchone()
    tasks = {t for (t,) in con.execute("SELECT DISTINCT task FROM results WHERE launch_id = ?", (study,))}
    con.close()
    assert "phase" in tasks
    per_center = sum(len(load_task(t).metrics) for t in tasks)  # one row per task metric, no per-video rows
    assert results == (3 * per_center, 3)


def test_one_model_load_per_site(federation, study) -> None:  # type: ignore[no-untyped-def]
    for site in federation.sites:
        log = (federation.run / "sites" / site.name / "logs" / "engine.log").read_text()
        assert log.count("model loaded (manifest") == 1


def test_relaunching_an_answered_study_is_refused_by_every_site(federation, study) -> None:  # type: ignore[no-untyped-def]
    """A curious hub asks the same question again under new job ids: each site answers it once only."""
    again = launch(federation.hub, federation.run / "itest-phase.yaml", echo=lambda _: None)
    store = federation.hub.store()
    jobs = {j["center"]: j for j in store.jobs(again)}
    for site in federation.sites:
        assert jobs[site.name]["state"] == "refused", jobs[site.name]
        assert jobs[site.name]["detail"] == "already-answered (ask the site's operator for details)"
    assert store.results_frame(again).empty
