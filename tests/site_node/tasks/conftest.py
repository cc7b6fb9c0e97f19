"""Shared fixtures for the five-task tests: the tiny model and one synthetic site in every label format."""

from __future__ import annotations

from pathlib import Path

import pytest

SITE, SEED, SHIFT, SECONDS = "test-site", 3, 0.2, 10.0


@pytest.fixture(scope="session")
def eval_model_dir(request: pytest.FixtureRequest) -> Path:
    """The session's tiny model (tests/conftest.py) where there is one, else the same cached build."""
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from hub.demo import cache_root
        from site_node.model.tiny import ensure_tiny_model

        return ensure_tiny_model(cache_root())


@pytest.fixture(scope="session")
def synthetic_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short synthetic videos with labels in all five formats (out/cholec80, out/cholect50, ...)."""
    from site_node.synth_formats import synthesize_all

    out = tmp_path_factory.mktemp("site")
    synthesize_all(out, SITE, 2, SHIFT, SEED, seconds=SECONDS)
    return out
