"""Alembic revisions of the results store, one file each, applied in order."""
