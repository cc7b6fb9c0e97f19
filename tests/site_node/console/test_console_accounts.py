"""Console login links and sessions, and the state `site_node serve` leaves for the Status page."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from site_node.console import heartbeat
from site_node.console.accounts import AccessError, ConsoleAccounts, Role


@pytest.mark.parametrize(
    ("ttl_s", "spend_twice", "expected"),
    [(-1.0, False, "expired"), (60.0, True, "already used")],
)
def test_login_link_refused(tmp_path: Path, ttl_s: float, spend_twice: bool, expected: str) -> None:
    accounts = ConsoleAccounts(tmp_path / "console")
    token = accounts.new_login("dora", Role.OWNER, ttl_s=ttl_s)
    if spend_twice:
        accounts.redeem(token)
    with pytest.raises(AccessError, match=expected):
        accounts.redeem(token)


def test_unknown_link_bad_name_and_ended_session(tmp_path: Path) -> None:
    accounts = ConsoleAccounts(tmp_path / "console")
    with pytest.raises(AccessError, match="unknown"):
        accounts.redeem("not-a-token")
    with pytest.raises(AccessError, match="operator name"):
        accounts.new_login("../etc", Role.OWNER)
    operator, session = accounts.redeem(accounts.new_login("ivan", Role.VIEWER))
    assert operator.role is Role.VIEWER and not operator.role.can_decide
    assert accounts.operator(session) == operator
    accounts.end(session)
    assert accounts.operator(session) is None
    assert oct((tmp_path / "console").stat().st_mode & 0o777) == "0o700"


def _state(pid: int, updated_at: float) -> heartbeat.ServeState:
    return heartbeat.ServeState(
        pid, updated_at - 5, updated_at, "unix:/x", True, None, "Landlock ABI 6", None, None, None
    )


def test_serve_state_is_read_only_while_serve_lives(tmp_path: Path) -> None:
    heartbeat.write(tmp_path, _state(os.getpid(), time.time()))
    assert heartbeat.read(tmp_path) is not None
    assert heartbeat.read(tmp_path, now=time.time() + heartbeat.STALE_AFTER_S + 1) is None  # stale
    dead = subprocess.Popen(["true"])
    dead.wait()
    heartbeat.write(tmp_path, _state(dead.pid, time.time()))
    assert heartbeat.read(tmp_path) is None  # the process is gone
    heartbeat.clear(tmp_path)
    assert heartbeat.read(tmp_path) is None
