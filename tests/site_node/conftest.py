"""Site-node fixtures: one synthetic site with labels in every supported format."""

from __future__ import annotations

from pathlib import Path

import pytest

SITE, SEED, SHIFT, SECONDS = "test-site", 3, 0.2, 10.0


@pytest.fixture(scope="session")
def synthetic_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short synthetic videos with labels in all five formats (out/cholec80, out/cholect50, ...)."""
    from site_node.synthetic.formats import synthesize_all

    out = tmp_path_factory.mktemp("site")
    synthesize_all(out, SITE, 2, SHIFT, SEED, seconds=SECONDS)
    return out
