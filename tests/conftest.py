"""Shared fixtures: offline environment and the tiny Qwen2.5-VL, built once and cached in .cache/models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("FLWR_DISABLE_UPDATE_CHECK", "1"),
):
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from site_node.synthetic.tiny_model import ensure_tiny_model

    return ensure_tiny_model(REPO / ".cache" / "models")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (make test): the tests on the shared integration federation run
    on one worker (one federation per session), every other module on one worker (its module fixtures built once)."""
    for item in items:
        group = "federation" if "federation" in getattr(item, "fixturenames", ()) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
