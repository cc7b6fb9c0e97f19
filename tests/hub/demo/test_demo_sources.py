"""The demo's synthetic source cache: keyed by what shapes the sources, and a complete one is reused as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.demo.study import SITES, DemoSite, cached_sources, sources_key

PHASE_ONLY = ("cholec80",)


@pytest.mark.parametrize(
    ("sites", "formats"),
    [
        (SITES, ("cholec80", "cholect50")),  # another format
        ((DemoSite("lakeside-university", 0.3, 11), *SITES[1:]), PHASE_ONLY),  # another shift
        ((*SITES[:2], DemoSite("st-elsewhere", 0.8, 33, videos=7)), PHASE_ONLY),  # another video count
        (SITES[:2], PHASE_ONLY),  # a site fewer
    ],
)
def test_the_key_changes_with_what_shapes_the_sources(sites: tuple[DemoSite, ...], formats: tuple[str, ...]) -> None:
    assert sources_key(SITES, PHASE_ONLY) == sources_key(SITES, PHASE_ONLY)
    assert sources_key(sites, formats) != sources_key(SITES, PHASE_ONLY)


def test_a_complete_cache_is_reused_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGFED_CACHE", str(tmp_path))
    target = tmp_path / "synthetic" / sources_key(SITES, PHASE_ONLY)
    (target / SITES[0].name / "cholec80").mkdir(parents=True)
    (target / ".complete").touch()
    assert cached_sources(SITES, PHASE_ONLY) == target
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [target.name]  # nothing else written
    assert [p.name for p in target.iterdir() if p.is_dir()] == [SITES[0].name]
