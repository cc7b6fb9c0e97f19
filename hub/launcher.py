"""`hub launch`: register the study in the store, start the Flower run, follow the sites until it ends."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from hub.home import HubHome
from hub.superlink import run_status, start_run
from protocols.errors import SurgFedError
from protocols.states import LaunchState
from protocols.study import StudyProtocol, load_protocol

log = logging.getLogger(__name__)


def new_launch_id(study_id: str) -> str:
    """The study id, the start time and a random suffix; `hub launch` and the dashboard name launches alike."""
    return f"{study_id}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def register_study(home: HubHome, protocol_file: Path) -> StudyProtocol:
    protocol = load_protocol(protocol_file)
    home.store().put_study(
        study_id=protocol.study_id,
        version=protocol.version,
        title=protocol.title,
        protocol_hash=protocol.content_hash,
        protocol_yaml=Path(protocol_file).read_text(encoding="utf-8"),
        model_hash=protocol.model_sha256,
    )
    return protocol


def launch(home: HubHome, protocol_file: Path, *, echo: Callable[[str], None] = print) -> str:
    """Start one launch of the study and wait for it; returns the launch id."""
    protocol = register_study(home, protocol_file)
    store = home.store()
    launch_id = new_launch_id(protocol.study_id)
    store.new_launch(launch_id, protocol.study_id, protocol.content_hash)
    run_id = start_run(home, launch_id)
    echo(
        f"study {protocol.study_id}, launch {launch_id}: Flower run {run_id}, {len(protocol.sites)} sites, "
        f"{protocol.round_plan.rounds} round(s), deadline {protocol.round_plan.deadline_minutes:g} min"
    )
    follow(home, launch_id, run_id, protocol, echo=echo)
    return launch_id


def follow(
    home: HubHome, launch_id: str, run_id: str, protocol: StudyProtocol, *, echo: Callable[[str], None] = print
) -> None:
    """Print each site's state as it changes until the ServerApp marks the launch finished."""
    store = home.store()
    end = time.time() + protocol.round_plan.deadline_minutes * 60 + 300
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
        if state is LaunchState.FAILED:
            raise SurgFedError(f"launch {launch_id} failed: {launch['detail']}")
        if time.time() - last_check > 15:  # the ServerApp may die before it can mark the launch
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
