"""Synthetic sites: real MP4 files in Cholec80 layout whose labels match the decoded frames, shifted per site."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocols.errors import ConfigError
from protocols.tasks import load_task
from site_node.synthetic import render
from site_node.synthetic import videos as synth_videos
from site_node.video import probe_video, sample_frames

PHASES = load_task("phase").label_names
SHIFTS = (0.1, 0.9)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("sites")
    for shift in SHIFTS:
        synth_videos.synthesize_site(root / str(shift), f"site-{shift}", 2, shift, seed=3, seconds=4.0)
    return {shift: root / str(shift) for shift in SHIFTS}


def _phase_rows(site: Path, stem: str) -> list[str]:
    lines = (site / "phase_annotations" / f"{stem}-phase.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Frame\tPhase"
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(f) for f, _ in rows] == list(range(len(rows)))
    return [p for _, p in rows]


def test_site_folder_has_cholec80_layout(sites: dict[float, Path]) -> None:
    for site in sites.values():
        assert sorted(p.name for p in (site / "videos").iterdir()) == ["video01.mp4", "video02.mp4"]
        assert sorted(p.name for p in (site / "phase_annotations").iterdir()) == [
            "video01-phase.txt",
            "video02-phase.txt",
        ]
        assert sorted(p.name for p in (site / "tool_annotations").iterdir()) == ["video01-tool.txt", "video02-tool.txt"]


def test_one_phase_row_per_decoded_frame_in_surgical_order(sites: dict[float, Path]) -> None:
    for site in sites.values():
        for video in sorted((site / "videos").glob("*.mp4")):
            phases = _phase_rows(site, video.stem)
            decoded = sum(1 for _ in sample_frames(video, 1))
            assert len(phases) == decoded == probe_video(video).n_frames
            assert set(phases) <= set(PHASES)
            order = [PHASES.index(p) for p in phases]
            assert order == sorted(order), "phases must follow the surgical order"
            assert len(set(phases)) >= 4


def test_tool_file_every_25_frames_with_plausible_tools(sites: dict[float, Path]) -> None:
    site = sites[SHIFTS[0]]
    phases = _phase_rows(site, "video01")
    lines = (site / "tool_annotations" / "video01-tool.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["Frame", *render.TOOL_NAMES]
    rows = [[int(v) for v in line.split("\t")] for line in lines[1:]]
    assert [r[0] for r in rows] == list(range(0, len(phases), 25))
    for frame, *flags in rows:
        assert set(flags) <= {0, 1}
        used = {t for t, f in zip(render.TOOL_NAMES, flags, strict=False) if f}
        assert used <= set(render.phase_scene(phases[frame]).tools), f"frame {frame}: {used} in {phases[frame]}"


def test_shift_lowers_frame_rate_and_resolution(sites: dict[float, Path]) -> None:
    low, high = (probe_video(sites[s] / "videos" / "video01.mp4") for s in SHIFTS)
    assert (low.fps, low.width, low.height) == (render.SiteDomain(0.1).fps, *render.SiteDomain(0.1).size)
    assert (high.fps, high.width, high.height) == (render.SiteDomain(0.9).fps, *render.SiteDomain(0.9).size)
    assert high.fps < low.fps and high.width < low.width and high.height < low.height
    assert render.SiteDomain(0.0).fps == 25 and render.SiteDomain(0.0).size == (320, 240)
    assert 9 <= render.SiteDomain(1.0).fps <= 11 and render.SiteDomain(1.0).size == (256, 192)


def test_synthesis_is_deterministic(sites: dict[float, Path], tmp_path: Path) -> None:
    synth_videos.synthesize_site(tmp_path, f"site-{SHIFTS[0]}", 1, SHIFTS[0], seed=3, seconds=4.0)
    assert _phase_rows(tmp_path, "video01") == _phase_rows(sites[SHIFTS[0]], "video01")
    ((_, again),) = list(sample_frames(tmp_path / "videos" / "video01.mp4", 1000))
    ((_, first),) = list(sample_frames(sites[SHIFTS[0]] / "videos" / "video01.mp4", 1000))
    assert np.array_equal(np.asarray(again), np.asarray(first))


def test_render_frame_is_seeded_and_phase_specific() -> None:
    a = render.render_frame(2, 0.3, np.random.default_rng(5))
    b = render.render_frame(2, 0.3, np.random.default_rng(5))
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    small = render.render_frame(2, 0.3, np.random.default_rng(5), size=(256, 192))
    assert small.shape == (192, 256, 3)
    # The organ colour is the phase signature: the same scene in another phase differs clearly.
    other = render.render_frame(5, 0.3, np.random.default_rng(5))
    assert np.abs(a.astype(int) - other.astype(int)).mean() > 5


@pytest.mark.parametrize("phase_index, shift", [(7, 0.2), (-1, 0.2), (0, 1.5), (0, -0.1)])
def test_render_frame_rejects_bad_arguments(phase_index: int, shift: float) -> None:
    with pytest.raises(ConfigError, match=str(phase_index) if shift == 0.2 else "shift"):
        render.render_frame(phase_index, shift, np.random.default_rng(0))


def test_synthesize_site_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="videos"):
        synth_videos.synthesize_site(tmp_path, "x", 0, 0.2, seed=0)
    with pytest.raises(ConfigError, match="shift"):
        synth_videos.synthesize_site(tmp_path, "x", 1, 2.0, seed=0)
