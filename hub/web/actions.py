"""Launch and cancel as the dashboard and the API receive them: hand over to hub.studies, log the write."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hub.accounts import Accounts, User
from hub.home import HubHome
from hub.studies import cancel_study, submit_study
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
