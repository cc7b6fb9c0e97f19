"""Alembic migrations of the hub's results store, applied when the store is opened (SQLite and PostgreSQL)."""
