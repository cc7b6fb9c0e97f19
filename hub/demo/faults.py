"""`hub demo --faults`: the demo study with a site engine and `hub serve` killed mid-study, against a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hub.demo.loopback import LoopbackFederation
from hub.demo.study import DEMO_FORMATS, SITES, STUDIES, DemoSite, cached_sources, start_study_sites
from hub.home import HubHome
from hub.studies import submit_study
from protocols.contract import JobState, job_id_for
from protocols.errors import SurgFedError
from protocols.procs import Child, wait_for
from protocols.states import LaunchState, SiteState

Echo = Callable[[str], None]


@dataclass(frozen=True)
class FaultPlan:
    """What the faulty run kills: this site's engine once a video of its job is done, then `hub serve`."""

    victim: str
    timeout: float = 1800.0


FAULTS_DEADLINE = "30m"
RESTART_SECONDS = 10.0  # deploy/systemd/surgfed-site.service's RestartSec


@dataclass
class StudyRun:
    table: pd.DataFrame
    jobs: dict[str, dict[str, object]]
    notes: list[str]


def run_faults(
    out: Path,
    *,
    sites: tuple[DemoSite, ...] = SITES,
    formats: tuple[str, ...] = DEMO_FORMATS,
    echo: Echo = print,
) -> tuple[StudyRun, StudyRun]:
    """The demo study twice on fresh federations (same seeds): clean, then with the faults; the tables must match."""
    out = Path(out).resolve()
    raw_root = cached_sources(sites, formats)  # both runs ingest the same sources, as every demo does
    echo("fault-free run ...")
    clean = run_study(out / "clean", sites, formats, None, echo, raw_root=raw_root)
    echo("run with faults ...")
    plan = FaultPlan(sites[-1].name)
    faulty = run_study(out / "faulty", sites, formats, plan, echo, keys_from=out / "clean", raw_root=raw_root)
    for note in faulty.notes:
        echo(f"  {note}")
    compare(clean.table, faulty.table, echo)
    return clean, faulty


def run_study(
    run: Path,
    sites: tuple[DemoSite, ...],
    formats: tuple[str, ...],
    faults: FaultPlan | None,
    echo: Echo,
    keys_from: Path | None = None,
    raw_root: Path | None = None,
) -> StudyRun:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    with LoopbackFederation(run) as fed:
        # A generous round deadline: the claim is the equality of the tables, and a restarted engine on a busy
        # machine must not see its round closed before it finishes (the template's 8 minutes assume no faults).
        hub, protocol = start_study_sites(
            fed, STUDIES["evaluate"][1], sites, formats, keys_from, raw_root, deadline=FAULTS_DEADLINE
        )
        launch_id = submit_study(hub, protocol)
        notes = _inject(fed, hub, launch_id, faults) if faults else []
        wait_for(lambda: not _open(hub, launch_id), faults.timeout if faults else 1800, f"launch {launch_id} to end")
        state = hub.store().launch(launch_id)
        if state["state"] != LaunchState.FINISHED.value:
            raise SurgFedError(f"launch {launch_id} ended {state['state']}: {state['detail']}")
        jobs = {str(j["center"]): j for j in hub.store().jobs(launch_id)}
        echo("  " + ", ".join(f"{c}: {j['state']}" for c, j in jobs.items()))
        return StudyRun(hub.store().results_frame(launch_id), jobs, notes)


def _open(hub: HubHome, launch_id: str) -> bool:
    return LaunchState(hub.store().launch(launch_id)["state"]).open


def _job(hub: HubHome, launch_id: str, site: str) -> dict[str, Any] | None:
    return next((j for j in hub.store().jobs(launch_id) if j["center"] == site), None)


def _inject(fed: LoopbackFederation, hub: HubHome, launch_id: str, plan: FaultPlan) -> list[str]:
    """Kill the victim's engine after its first finished video, restart it; then kill and restart `hub serve`."""
    site_home = fed.run_dir / "sites" / plan.victim
    job_id = job_id_for(launch_id, 0, "evaluate", plan.victim)  # the site's own job file: no hub polling lag
    job_file, marks = site_home / "jobs" / f"{job_id}.json", site_home / "jobs" / job_id / "predictions.jsonl.done"
    done: list[str] = []

    def first_video_done() -> bool:
        running = job_file.is_file() and json.loads(job_file.read_text()).get("state") == JobState.RUNNING.value
        done[:] = marks.read_text().splitlines() if running and marks.is_file() else []
        return bool(done)

    wait_for(first_video_done, plan.timeout, f"{plan.victim} to finish its first video")
    _kill(fed, f"site:{plan.victim}")
    if json.loads(job_file.read_text()).get("state") != JobState.RUNNING.value:
        raise SurgFedError(f"{plan.victim} finished its job before its engine was killed; give it more videos")
    notes = [f"killed the engine of {plan.victim} mid-job ({len(done)} video(s) checkpointed), restarted it"]
    restarts = _restart_site(fed, hub, launch_id, plan)
    if restarts > 1:
        notes.append(
            f"{plan.victim}'s SuperNode was refused until the SuperLink let its old session go: started {restarts}x"
        )
    if not _open(hub, launch_id):
        raise SurgFedError("the study ended before `hub serve` could be killed mid-study")
    stored = [j["center"] for j in hub.store().jobs(launch_id) if j["state"] == SiteState.STORED.value]
    _kill(fed, "hub")
    notes.append(f"killed `hub serve` mid-study (stored: {stored or 'none yet'}), restarted it")
    fed.serve_hub()
    again = _supervise_until_closed(fed, hub, launch_id, plan.timeout)
    if again:
        notes.append(
            f"after the hub restart, `site_node serve` exited at {', '.join(sorted(set(again)))} (its SuperNode was "
            f"refused while the SuperLink held its old session) and was started again, as its supervisor would"
        )
    after = _job(hub, launch_id, plan.victim)
    assert after is not None
    kept = marks.read_text().splitlines()[: len(done)] == done if marks.is_file() else False
    notes.append(
        f"{plan.victim}: the same job id after both restarts ({after['job_id'] == job_id}), its checkpointed "
        f"videos kept ({kept}), one job at the site ({_site_jobs(site_home, launch_id)})"
    )
    if after["job_id"] != job_id or not kept:
        raise SurgFedError("; ".join(notes))
    return notes


def _supervise_until_closed(fed: LoopbackFederation, hub: HubHome, launch_id: str, timeout: float) -> list[str]:
    """Wait for the launch to end, starting again every site whose `site_node serve` exited, as systemd's
    Restart=on-failure does (deploy/systemd/surgfed-site.service); returns the sites started again."""
    end, again = time.time() + timeout, []
    while _open(hub, launch_id):
        if time.time() > end:
            raise SurgFedError(f"launch {launch_id} did not end within {timeout:.0f}s after the restarts")
        for key, child in list(fed.children.items()):
            if key.startswith("site:") and not child.alive():
                _start_again(fed, key.removeprefix("site:"))
                again.append(key.removeprefix("site:"))
        time.sleep(1.0)
    return again


def _start_again(fed: LoopbackFederation, site: str) -> Child:
    """What systemd's Restart=on-failure does for an exited `site_node serve`: reap it, wait RestartSec (the
    SuperLink lets a dead session go meanwhile), start it again."""
    fed.stop_site(site)
    time.sleep(RESTART_SECONDS)
    return fed.serve_site(site)


def _restart_site(fed: LoopbackFederation, hub: HubHome, launch_id: str, plan: FaultPlan) -> int:
    """Start the site again, as its supervisor would, until the hub hears from it; returns how many starts it took.

    A SuperNode restarted right after a crash is refused (412) while the SuperLink still holds its old session,
    and `site_node serve` then exits: start it again after a pause, like systemd's Restart=on-failure.
    """
    end = time.time() + plan.timeout
    restarted, starts, child = time.time(), 1, fed.serve_site(plan.victim)
    while time.time() < end:
        if _polled_since(hub, launch_id, plan.victim, restarted):
            return starts
        if not child.alive():
            child, restarted, starts = _start_again(fed, plan.victim), time.time(), starts + 1
        time.sleep(0.5)
    fed.stop_site(plan.victim)
    raise SurgFedError(f"{plan.victim} did not come back within {plan.timeout:.0f}s")


def _polled_since(hub: HubHome, launch_id: str, site: str, since: float) -> bool:
    """The site answered the hub since `since` (an unreachable site's poll is recorded with a detail)."""
    job = _job(hub, launch_id, site)
    return job is not None and float(job["updated_at"]) > since and not job["detail"]


def _site_jobs(site_home: Path, launch_id: str) -> int:
    return len(list((site_home / "jobs").glob(f"{launch_id}*.json")))


def _kill(fed: LoopbackFederation, name: str) -> None:
    """SIGKILL the service's whole process group (a crash, a pulled plug), then reap it."""
    child = fed.children.pop(name)
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.proc.wait(timeout=30)
    child.stop()
    time.sleep(2.0)  # what it started watches its parent and exits


def compare(clean: pd.DataFrame, faulty: pd.DataFrame, echo: Echo) -> None:
    """Print the per-center comparison; raise when any released number differs."""
    key = ["center", "task", "metric"]
    a = clean.sort_values(key).reset_index(drop=True)
    b = faulty.sort_values(key).reset_index(drop=True)
    echo("per-center table, fault-free vs with faults (same seeds):")
    for center in sorted(set(a["center"]) | set(b["center"])):
        ca, cb = a[a["center"] == center].reset_index(drop=True), b[b["center"] == center].reset_index(drop=True)
        same = ca.equals(cb)
        echo(f"  {center}: {len(ca)} vs {len(cb)} numbers, {'equal' if same else 'DIFFERENT'}")
    if not a.equals(b):
        raise SurgFedError("the per-center table with faults differs from the fault-free one")
    echo(f"equal: all {len(a)} released numbers of {a['center'].nunique()} center(s) match")
