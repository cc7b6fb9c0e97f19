"""Study lifecycle actions a CLI command and a dashboard button both call: submit (register) and cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.home import HubHome
from hub.launcher import new_launch_id, register_study
from protocols.errors import ConfigError
from protocols.states import LaunchState
from protocols.study import StudyProtocol, loads_protocol


def submit_study(home: HubHome, protocol_file: Path) -> str:
    """Register the study and queue a launch for `hub serve`; returns at once with the launch id."""
    protocol = register_study(home, protocol_file)
    store = home.store()
    for launch in store.launches_of(protocol.study_id):
        if LaunchState(launch["state"]).open:
            raise ConfigError(
                f"study {protocol.study_id!r} already has an open launch {launch['launch_id']} "
                f"({launch['state']}); cancel it first"
            )
    launch_id = new_launch_id(protocol.study_id)
    store.new_launch(launch_id, protocol.study_id, protocol.content_hash, state=LaunchState.PENDING.value)
    return launch_id


def cancel_study(home: HubHome, study_id: str, *, by: str) -> list[str]:
    """Mark every open launch of the study cancelled (`hub serve` stops asking its sites); returns their ids."""
    store = home.store()
    store.study(study_id)  # names the known studies when the id is wrong
    cancelled = [launch["launch_id"] for launch in store.launches_of(study_id) if LaunchState(launch["state"]).open]
    if not cancelled:
        raise ConfigError(f"study {study_id!r} has no pending or running launch to cancel")
    for launch_id in cancelled:
        store.finish_launch(launch_id, LaunchState.CANCELLED, f"cancelled by {by}")
    return cancelled


def study_protocol(study: dict[str, Any]) -> StudyProtocol | None:
    """The stored protocol of a study row, or None when it no longer parses (shown as such, never fatal)."""
    try:
        return loads_protocol(study["protocol_yaml"], f"study {study['study_id']}")
    except Exception:  # noqa: BLE001 - an old protocol text must not take the dashboard down
        return None
