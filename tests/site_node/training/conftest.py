"""Fixtures for the training tests: the tiny model (loaded once) and a small synthetic Cholec80 store."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from site_node.model.loading import LoadedModel, load_model
from site_node.store import DatasetEntry, DataStore, VideoEntry
from site_node.synthetic.videos import synthesize_site
from site_node.video import probe_video

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def training_model_dir(request: pytest.FixtureRequest) -> Path:
    """The project's session `tiny_model_dir` where a conftest provides it, else the same cached build."""
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from site_node.synthetic.tiny_model import ensure_tiny_model

        return ensure_tiny_model(ROOT / ".cache" / "models")


@pytest.fixture(scope="session")
def lm(training_model_dir: Path) -> LoadedModel:
    return load_model(training_model_dir, device="cpu")


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> DataStore:
    """Three short synthetic videos (10 fps at shift 1) with Cholec80 phase and tool files."""
    root = tmp_path_factory.mktemp("train-store")
    paths = synthesize_site(root / "data", "trainer", 3, 1.0, 11, seconds=7.0)
    videos = []
    for p in paths:
        info = probe_video(p)
        videos.append(
            VideoEntry(
                p.stem,
                p.relative_to(root).as_posix(),
                {"phase": f"data/phase_annotations/{p.stem}-phase.txt"},
                info.fps,
                info.n_frames,
            )
        )
    store = DataStore(root)
    store.add(DatasetEntry("ds-test", "cholec80", tuple(videos)))
    return store


def _widened(store: DataStore, root: Path, n: int) -> DataStore:
    """A store listing `n` distinct videos (the three synthetic ones repeated under other ids and case keys)."""
    base = store.datasets()[0].videos
    videos = [VideoEntry(f"v{i}", base[i % 3].video, base[i % 3].labels, base[i % 3].fps, base[i % 3].n_frames,
                         f"case-{i}") for i in range(n)]  # fmt: skip
    for v in base:
        (root / v.video).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(store.path(v.video), root / v.video)
        for rel in v.labels.values():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(store.path(rel), root / rel)
    wide = DataStore(root)
    wide.add(DatasetEntry("ds-wide", "cholec80", tuple(videos)))
    return wide


@pytest.fixture(scope="session")
def widened() -> Callable[[DataStore, Path, int], DataStore]:
    """`widened(store, root, n)`: a copy of `store` at `root` listing `n` distinct videos (for the site policy's
    video floor without synthesising more videos)."""
    return _widened
