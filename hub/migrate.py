"""Bring a results store's schema to the newest Alembic revision when it is opened (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Stores made before migrations existed hold exactly the baseline's tables and no alembic_version.
BASELINE = "0001"
_LOCK_KEY = 0x5F_FED_0  # any fixed number: one advisory lock serialises migrations of a store
_THREADS = threading.Lock()
log = logging.getLogger(__name__)
# Alembic announces its context at INFO on every open; the one line worth seeing is ours, when something changes.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, f"no Alembic revisions under {MIGRATIONS}"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as con:
        return MigrationContext.configure(con).get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory lock: processes opening one store file at once take a lock file next to it."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_schema(engine: Engine) -> None:
    """Apply every migration the store lacks, once, even when several processes open a new store together.

    PostgreSQL: in one transaction under an advisory lock; SQLite: under a lock file next to the database.
    """
    with _THREADS, _sqlite_file_lock(engine):
        _upgrade(engine)


def _upgrade(engine: Engine) -> None:
    cfg = _config()
    head = head_revision()
    with engine.begin() as con:
        if con.dialect.name == "postgresql":  # hub serve, the ServerApp and hub web may open a new store at once
            con.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        current = MigrationContext.configure(con).get_current_revision()
        if current == head:
            return
        cfg.attributes["connection"] = con
        log.info("results store schema: migrating %s -> %s", current or "empty", head)
        if current is None and inspect(con).has_table("studies"):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
