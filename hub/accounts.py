"""Dashboard accounts in the results store: users with a role, one-time login tokens, sessions, the write log."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Column, Float, Integer, String, Table, Text, delete, insert, select, update

from hub.store import ResultsStore, metadata
from protocols.errors import SurgFedError

LOGIN_TOKEN_TTL_S = 7 * 24 * 3600  # a link mailed on Friday still works on Monday
SESSION_TTL_S = 12 * 3600

users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float, nullable=True),
)
# Tokens and sessions are kept as sha256 digests only: a copy of the store logs nobody in.
login_tokens = Table(
    "login_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)
sessions = Table(
    "sessions",
    metadata,
    Column("session_sha256", String(64), primary_key=True),
    Column("user", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(160), nullable=True),
    Column("detail", Text, nullable=True),
)


class AccessError(SurgFedError):
    """A login token or session is unknown, used or expired, or the role may not do this."""


class UserRole(str, Enum):
    COORDINATOR = "coordinator"  # launches and cancels studies
    VIEWER = "viewer"  # reads studies, sites and results

    @classmethod
    def parse(cls, value: str) -> UserRole:
        try:
            return cls(value)
        except ValueError:
            raise AccessError(f"unknown role {value!r}; expected one of {[r.value for r in cls]}") from None


@dataclass(frozen=True)
class User:
    name: str
    role: UserRole

    @property
    def can_write(self) -> bool:
        return self.role is UserRole.COORDINATOR


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Accounts:
    """Users and sessions over the results store's engine; every write a person makes goes to audit_log."""

    def __init__(self, store: ResultsStore, clock: Callable[[], float] = time.time) -> None:
        self.engine = store.engine
        self.clock = clock  # seconds since the epoch; a test passes its own to step past an expiry

    def add_user(self, name: str, role: UserRole, *, ttl_s: float = LOGIN_TOKEN_TTL_S) -> str:
        """Create (or re-role) a user and return a fresh one-time login token; only its digest is stored."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise AccessError(f"user name {name!r}: expected 1-64 letters, digits, '-', '_' or '.'")
        now = self.clock()
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as con:
            con.execute(delete(users).where(users.c.name == name))
            con.execute(insert(users).values(name=name, role=role.value, created_at=now))
            con.execute(
                insert(login_tokens).values(
                    token_sha256=digest(token), user=name, created_at=now, expires_at=now + ttl_s
                )
            )
        self.log("cli", "user.add", name, role.value)
        return token

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(select(users).order_by(users.c.name))]

    def redeem(self, token: str, *, ttl_s: float = SESSION_TTL_S) -> tuple[User, str]:
        """Spend a login token (once) and open a session; returns the user and the session token for the cookie."""
        now = self.clock()
        with self.engine.begin() as con:
            row = con.execute(select(login_tokens).where(login_tokens.c.token_sha256 == digest(token))).first()
            if row is None or row.used_at is not None or row.expires_at < now:
                why = "unknown" if row is None else "already used" if row.used_at is not None else "expired"
                raise AccessError(f"this login link is {why}; ask a coordinator for `hub users add` again")
            con.execute(update(login_tokens).where(login_tokens.c.token_sha256 == row.token_sha256).values(used_at=now))
            session = secrets.token_urlsafe(32)
            con.execute(
                insert(sessions).values(
                    session_sha256=digest(session), user=row.user, created_at=now, expires_at=now + ttl_s
                )
            )
        user = self.session_user(session)
        if user is None:
            raise AccessError(f"user {row.user!r} no longer exists")
        self.log(user.name, "login", None, None)
        return user, session

    def session_user(self, session: str | None) -> User | None:
        if not session:
            return None
        with self.engine.connect() as con:
            row = con.execute(
                select(users.c.name, users.c.role)
                .join(sessions, sessions.c.user == users.c.name)
                .where(
                    sessions.c.session_sha256 == digest(session),
                    sessions.c.expires_at > self.clock(),
                    users.c.disabled_at.is_(None),
                )
            ).first()
        return None if row is None else User(row.name, UserRole(row.role))

    def end_session(self, session: str) -> None:
        with self.engine.begin() as con:
            con.execute(delete(sessions).where(sessions.c.session_sha256 == digest(session)))

    def log(self, actor: str, action: str, target: str | None, detail: str | None) -> None:
        with self.engine.begin() as con:
            con.execute(
                insert(audit_log).values(at=self.clock(), actor=actor, action=action, target=target, detail=detail)
            )

    def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
            return [dict(r._mapping) for r in con.execute(q)]
