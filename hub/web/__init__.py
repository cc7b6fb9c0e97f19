"""The coordinator dashboard and JSON API (FastAPI): pages and endpoints over the same functions the CLI calls."""
