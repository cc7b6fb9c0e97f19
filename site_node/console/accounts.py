"""Console operators: one-time login links and sessions in the site home, stored as sha256 digests only."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from protocols.errors import SurgFedError

LOGIN_TOKEN_TTL_S = 24 * 3600  # a link printed for the data owner works for a day, once
SESSION_TTL_S = 12 * 3600
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_tokens (token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL,
    expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS sessions (session_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL,
    expires_at REAL NOT NULL);
"""


class AccessError(SurgFedError):
    """A login link is unknown, used or expired, a session is not valid, or the role may not do this."""


class Role(str, Enum):
    OWNER = "owner"  # the data owner: approves or rejects protocols and releases
    VIEWER = "viewer"  # hospital IT and others: reads every page, decides nothing

    @property
    def can_decide(self) -> bool:
        return self is Role.OWNER


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ConsoleAccounts:
    """Tokens and sessions in `console/console.db` (owner-only); a copy of the file signs nobody in."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.db = self.folder / "console.db"

    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        new = not self.db.exists()
        con = sqlite3.connect(self.db, timeout=10)
        if new:
            os.chmod(self.db, 0o600)
        con.executescript(_SCHEMA)
        return con

    def new_login(self, name: str, role: Role, *, ttl_s: float = LOGIN_TOKEN_TTL_S) -> str:
        """A fresh one-time login token for operator `name`; only its digest is kept."""
        if not _NAME.fullmatch(name):
            raise AccessError(f"operator name {name!r}: expected 1-64 letters, digits, '.', '_' or '-'")
        token = secrets.token_urlsafe(32)
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT INTO login_tokens VALUES (?, ?, ?, ?, NULL)",
                (digest(token), name, role.value, time.time() + ttl_s),
            )
        return token

    def redeem(self, token: str, *, ttl_s: float = SESSION_TTL_S) -> tuple[Operator, str]:
        """Spend a login token (once); returns the operator and a session token for the cookie."""
        now = time.time()
        with closing(self._connect()) as con, con:
            row = con.execute(
                "SELECT user, role, expires_at, used_at FROM login_tokens WHERE token_sha256 = ?", (digest(token),)
            ).fetchone()
            if row is None or row[3] is not None or row[2] < now:
                why = "unknown" if row is None else "already used" if row[3] is not None else "expired"
                raise AccessError(f"this login link is {why}; print a new one with `site_node console login`")
            con.execute("UPDATE login_tokens SET used_at = ? WHERE token_sha256 = ?", (now, digest(token)))
            session = secrets.token_urlsafe(32)
            con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (digest(session), row[0], row[1], now + ttl_s))
        return Operator(row[0], Role(row[1])), session

    def operator(self, session: str | None) -> Operator | None:
        if not session:
            return None
        with closing(self._connect()) as con:
            row = con.execute(
                "SELECT user, role FROM sessions WHERE session_sha256 = ? AND expires_at > ?",
                (digest(session), time.time()),
            ).fetchone()
        return None if row is None else Operator(row[0], Role(row[1]))

    def end(self, session: str) -> None:
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM sessions WHERE session_sha256 = ?", (digest(session),))
