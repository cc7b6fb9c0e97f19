"""Dashboard accounts on SQLite and PostgreSQL: roles, link expiry, sessions; `hub users add` through the CLI."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from hub.accounts import AccessError, Accounts, UserRole
from hub.cli import main
from hub.store import ResultsStore


@pytest.mark.parametrize(
    ("name", "role", "error"),
    [
        ("carla", "coordinator", None),
        ("vera.v_2", "viewer", None),
        ("carla", "admin", "unknown role 'admin'"),
        ("", "viewer", "user name ''"),
        ("eve; drop table users", "viewer", "user name"),
        ("x" * 65, "viewer", "user name"),
    ],
)
def test_add_user_checks_name_and_role(store_url: str, name: str, role: str, error: str | None) -> None:
    accounts = Accounts(ResultsStore(store_url))
    if error is None:
        user, _ = accounts.redeem(accounts.add_user(name, UserRole.parse(role)))
        assert (user.name, user.role.value, user.can_write) == (name, role, role == "coordinator")
    else:
        with pytest.raises(AccessError, match=re.escape(error)):
            accounts.add_user(name, UserRole.parse(role))


def test_expired_link_and_session(store_url: str) -> None:
    # A clock the test steps: with the wall clock, a loaded machine once spent the session's 0.5 s before its
    # first check.
    now = [time.time()]
    accounts = Accounts(ResultsStore(store_url), clock=lambda: now[0])
    with pytest.raises(AccessError, match="expired"):
        accounts.redeem(accounts.add_user("old", UserRole.VIEWER, ttl_s=-1))
    user, session = accounts.redeem(accounts.add_user("brief", UserRole.VIEWER), ttl_s=0.5)
    assert accounts.session_user(session) == user
    now[0] += 0.6
    assert accounts.session_user(session) is None
    _, session = accounts.redeem(accounts.add_user("leaving", UserRole.VIEWER))
    accounts.end_session(session)
    assert accounts.session_user(session) is None
    assert [e["action"] for e in accounts.audit()][:2] == ["login", "user.add"]


def test_cli_users_add_on_the_store_url(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "hub"
    assert main(["init", "--home", str(home), "--db", store_url]) == 0
    assert f'url = "{store_url}"' in (home / "hub.toml").read_text()
    assert main(["users", "add", "carla", "--role", "coordinator", "--home", str(home)]) == 0
    link = re.search(r"http://127\.0\.0\.1:8780/login\?token=(\S+)", capsys.readouterr().out)
    assert link is not None
    user, _ = Accounts(ResultsStore(store_url)).redeem(link.group(1))
    assert user.role is UserRole.COORDINATOR
    assert main(["users", "list", "--home", str(home)]) == 0
    assert "carla\tcoordinator" in capsys.readouterr().out
    assert main(["users", "add", "x", "--role", "viewer", "--home", str(tmp_path / "nohub")]) == 1
