"""`hub launch`: register the study in the store; follow it while `hub serve` runs it (or run it here, as before)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from hub.home import HubHome
from hub.studies import new_launch_id, register_study, submit_study
from hub.study_runner import runner_active
from hub.superlink import run_status, start_run
from protocols.durations import show_minutes
from protocols.errors import SurgFedError
from protocols.states import LaunchState
from protocols.study import StudyProtocol, load_protocol

log = logging.getLogger(__name__)


def launch(home: HubHome, protocol_file: Path, *, echo: Callable[[str], None] = print) -> str:
    """Run one launch of the study and wait for it; returns the launch id. With a `hub serve` running this home's
    studies, the launch is queued for it and followed from the store; without one, it runs from here."""
    if runner_active(home):
        launch_id = submit_study(home, protocol_file)
        protocol = load_protocol(protocol_file)
        echo(f"study {protocol.study_id}, launch {launch_id}: queued for `hub serve`, {_plan(protocol)}")
        follow(home, launch_id, None, protocol, echo=echo)
        return launch_id
    protocol = register_study(home, protocol_file)
    store = home.store()
    launch_id = new_launch_id(protocol.study_id)
    store.new_launch(launch_id, protocol.study_id, protocol.content_hash)
    run_id = start_run(home, launch_id)
    echo(f"study {protocol.study_id}, launch {launch_id}: Flower run {run_id}, {_plan(protocol)}")
    follow(home, launch_id, run_id, protocol, echo=echo)
    return launch_id


def _plan(protocol: StudyProtocol) -> str:
    quorum = protocol.round_plan.min_sites
    return (
        f"{len(protocol.sites)} sites, {protocol.round_plan.rounds} round(s), deadline "
        f"{show_minutes(protocol.round_plan.deadline_minutes)} per round"
        + (f", quorum {quorum} site(s)" if quorum else "")
    )


def follow(
    home: HubHome, launch_id: str, run_id: str | None, protocol: StudyProtocol, *, echo: Callable[[str], None] = print
) -> None:
    """Print each site's state as it changes until the launch ends (`run_id`: the run this process started)."""
    store = home.store()
    steps = len(protocol.round_numbers) * (2 if protocol.finetune is not None else 1)
    end = time.time() + steps * protocol.round_plan.deadline_minutes * 60 + 300
    seen: dict[tuple[int, str, str], str] = {}
    last_check = 0.0
    while time.time() < end:
        for job in store.jobs(launch_id):
            key = (job["round"], job["kind"], job["center"])
            state = f"{job['state']} {job['detail'] or ''}".strip()
            if seen.get(key) != state:
                seen[key] = state
                what = "" if job["kind"] == "evaluate" else f" {job['kind']}"
                echo(f"  round {job['round']}{what} {job['center']}: {state}")
        launch = store.launch(launch_id)
        state = LaunchState(launch["state"])
        if state is LaunchState.FINISHED:
            return
        if state in (LaunchState.FAILED, LaunchState.CANCELLED):
            raise SurgFedError(f"launch {launch_id} {state.value}: {launch['detail']}")
        if run_id is not None and time.time() - last_check > 15:  # the ServerApp may die before it can mark the launch
            last_check = time.time()
            status = run_status(home, run_id).get("status", "")
            if status.startswith("finished") and store.launch(launch_id)["state"] == LaunchState.RUNNING.value:
                ended = f"the ServerApp ended ({status}) without finishing the launch"
                store.finish_launch(launch_id, LaunchState.FAILED, ended)
        time.sleep(1.0)
    raise SurgFedError(
        f"launch {launch_id} of study {protocol.study_id} did not finish before its deadline; the states above "
        f"are the last each site reported, and the SuperLink's log is {home.logs_dir / 'superlink.log'}"
    )
