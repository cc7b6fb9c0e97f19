"""Launch, cancel, extend and rerun as the dashboard and the API receive them: hand over to hub.studies, log it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hub.accounts import Accounts, User
from hub.home import HubHome
from hub.studies import cancel_study, extend_round, rerun_sites, submit_study
from protocols.errors import UsageError

MAX_PROTOCOL_BYTES = 1 << 20


def launch(home: HubHome, accounts: Accounts, user: User, upload: bytes | None, protocol_path: str | None) -> str:
    """A study file uploaded from the page, or a protocol path on the hub: register it; returns the launch id."""
    if upload:
        if len(upload) > MAX_PROTOCOL_BYTES:
            raise UsageError(f"protocol file of {len(upload)} bytes; expected at most {MAX_PROTOCOL_BYTES}")
        folder = home.root / "protocols"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"uploaded-{hashlib.sha256(upload).hexdigest()[:16]}.yaml"
        path.write_bytes(upload)
    elif protocol_path and protocol_path.strip():
        path = Path(protocol_path.strip())
    else:
        raise UsageError("no protocol: upload a study file or give a protocol path on the hub")
    launch_id = submit_study(home, path)
    accounts.log(user.name, "study.launch", launch_id, str(path))
    return launch_id


def cancel(home: HubHome, accounts: Accounts, user: User, study_id: str) -> list[str]:
    cancelled = cancel_study(home, study_id, by=user.name)
    accounts.log(user.name, "study.cancel", study_id, ",".join(cancelled))
    return cancelled


def extend(home: HubHome, accounts: Accounts, user: User, study_id: str, round_: int, by: str) -> list[float]:
    deadlines = extend_round(home, study_id, round_, by, user=user.name)
    accounts.log(user.name, "study.extend", study_id, f"round {round_} by {by}")
    return deadlines


def rerun(
    home: HubHome, accounts: Accounts, user: User, study_id: str, round_: int, sites: list[str], by: str | None
) -> dict[str, str]:
    asked = rerun_sites(home, study_id, round_, sites, user=user.name, by=by)
    accounts.log(user.name, "study.rerun", study_id, f"round {round_}: {','.join(asked)}")
    return asked
