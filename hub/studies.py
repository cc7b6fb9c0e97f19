"""Study lifecycle actions a CLI command and a dashboard button both call: submit, cancel, extend, rerun, show."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from hub.home import HubHome
from hub.store_rounds import StudyRounds
from protocols.contract import job_id_for
from protocols.durations import parse_minutes
from protocols.errors import ConfigError, UsageError
from protocols.states import LaunchState, SiteState
from protocols.study import StudyProtocol, load_protocol, loads_protocol

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


def submit_study(home: HubHome, protocol_file: Path) -> str:
    """Register the study and queue a launch for `hub serve`; returns at once with the launch id."""
    protocol = load_protocol(protocol_file)
    store = home.store()
    for launch in store.launches_of(protocol.study_id):  # before registering: a running launch keeps its text
        if LaunchState(launch["state"]).open:
            raise ConfigError(
                f"study {protocol.study_id!r} already has an open launch {launch['launch_id']} "
                f"({launch['state']}); cancel it first"
            )
    register_study(home, protocol_file)
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


RERUNNABLE = frozenset({SiteState.PENDING, SiteState.ABSENT, SiteState.FAILED, SiteState.REFUSED, SiteState.ERROR})
# The site holds these jobs under their first id (a rerun asks again under that id, so the site answers it as is);
# after a failure, refusal or error it asks under a new one (the site's ledger lets a failed question be asked again).
SAME_JOB = frozenset({SiteState.PENDING, SiteState.ABSENT})


def list_studies(home: HubHome) -> list[dict[str, Any]]:
    """One row per study: its newest launch and how many of its site jobs are stored."""
    store = home.store()
    rows = []
    for study_id in sorted(store.study_ids()):
        launches = store.launches_of(study_id)
        newest = launches[0] if launches else None
        jobs = store.jobs(newest["launch_id"]) if newest else []
        rows.append(
            {
                "study_id": study_id,
                "title": store.study(study_id)["title"],
                "launch_id": newest["launch_id"] if newest else None,
                "state": newest["state"] if newest else "registered",
                "stored": sum(j["state"] == SiteState.STORED.value for j in jobs),
                "jobs": len(jobs),
            }
        )
    return rows


def show_study(home: HubHome, study_id: str) -> dict[str, Any]:
    """The newest launch of a study: its state, each round's deadline and close, and every site job."""
    store = home.store()
    study = store.study(study_id)
    launch = StudyRounds(store).newest_launch(study_id)
    return {
        "study": study,
        "launch": launch,
        "rounds": StudyRounds(store).rounds(launch["launch_id"]),
        "jobs": store.jobs(launch["launch_id"]),
    }


def extend_round(home: HubHome, study_id: str, round_: int, by: str, *, user: str) -> list[float]:
    """Move an open round's deadline later by a duration (`7d`); returns the new deadlines."""
    seconds = parse_minutes(by, "--by", UsageError) * 60
    rounds = StudyRounds(home.store())
    launch = rounds.newest_launch(study_id)
    if not LaunchState(launch["state"]).open:
        raise ConfigError(
            f"study {study_id!r}: launch {launch['launch_id']} is {launch['state']}; "
            f"a closed round's missing sites are asked again with `hub study rerun`"
        )
    moved = rounds.move_deadline(launch["launch_id"], round_, seconds)
    if not moved:
        raise ConfigError(
            f"study {study_id!r} has no open round {round_} (open rounds: "
            f"{[r['round'] for r in rounds.rounds(launch['launch_id']) if r['closed_at'] is None]})"
        )
    log.info("study %s round %d deadline moved by %s by %s", study_id, round_, by, user)
    return moved


def rerun_sites(
    home: HubHome,
    study_id: str,
    round_: int,
    sites: list[str],
    *,
    user: str,
    by: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """Ask missing, absent or failed sites of a closed evaluation round again; returns site -> job id.

    A stored result is never asked for twice; `hub serve` runs the reopened round with the sites' stored states.
    """
    store = home.store()
    rounds = StudyRounds(store)
    launch = rounds.newest_launch(study_id)
    launch_id, state = launch["launch_id"], LaunchState(launch["state"])
    if state is not LaunchState.FINISHED and state is not LaunchState.FAILED:
        raise ConfigError(
            f"study {study_id!r}: launch {launch_id} is {state.value}; rerun sites of a launch that has ended"
        )
    protocol = loads_protocol(store.study(study_id)["protocol_yaml"], f"study {study_id}")
    if round_ not in protocol.round_numbers:
        raise UsageError(f"--round must be one of {list(protocol.round_numbers)}, got {round_}")
    jobs = {j["center"]: j for j in store.jobs(launch_id) if j["round"] == round_ and j["kind"] == "evaluate"}
    new_ids = {site: _rerun_job_id(launch_id, round_, site, jobs.get(site), protocol.sites) for site in sites}
    minutes = parse_minutes(by, "--by", UsageError) if by else protocol.round_plan.deadline_minutes
    for site, (job_id, attempt) in new_ids.items():
        if site in jobs:
            rounds.reset_job(launch_id, round_, site, "evaluate", job_id, attempt)
        else:
            store.set_job(launch_id, round_, site, job_id=job_id, state=SiteState.PENDING.value, attempt=attempt)
    now = time.time() if now is None else now
    rounds.open_round(launch_id, round_, "evaluate", minutes * 60, now)
    rounds.reopen_round(launch_id, round_, "evaluate", now + minutes * 60)
    store.set_launch_state(launch_id, LaunchState.PENDING.value)
    log.info("study %s round %d: %s asked again by %s", study_id, round_, ", ".join(sites), user)
    return {site: job_id for site, (job_id, _) in new_ids.items()}


def _rerun_job_id(
    launch_id: str, round_: int, site: str, job: dict[str, Any] | None, roster: tuple[str, ...]
) -> tuple[str, int]:
    """The job id (and attempt) a rerun asks under; refuses what must not be asked again."""
    if site not in roster:
        raise UsageError(f"--sites: {site!r} is not a site of this study; its sites: {list(roster)}")
    if job is None:
        return job_id_for(launch_id, round_, "evaluate", site), 0
    state = SiteState(job["state"])
    if state is SiteState.STORED:
        raise ConfigError(
            f"site {site!r} delivered round {round_}: its result is stored, and a released result is never asked "
            f"for twice"
        )
    if state not in RERUNNABLE and state.final:
        raise ConfigError(
            f"site {site!r} is {state.value} in round {round_} (its data owner decided); only missing, absent or "
            f"failed sites are asked again"
        )
    if state in SAME_JOB or not state.final:  # still held by the site under its first id: fetch it as it stands
        return str(job["job_id"]), int(job["attempt"] or 0)
    attempt = int(job["attempt"] or 0) + 1
    return job_id_for(launch_id, round_, "evaluate", site, f"a{attempt}"), attempt
