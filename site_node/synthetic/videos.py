"""Synthetic laparoscopic-style videos with Cholec80 phase and tool files, for tests and the demo."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from protocols.errors import ConfigError, DataError
from site_node.synthetic.render import (
    _SCENES,
    HUE_JITTER_DEG,
    TOOL_EVERY,
    TOOL_NAMES,
    SiteDomain,
    _Layout,
    _Renderer,
    _sample_tools,
    phase_names,
)


@dataclass(frozen=True)
class VideoPlan:
    """The labels of one synthetic video: a phase per frame and a tool set per frame."""

    fps: int
    phases: tuple[int, ...]
    tools: tuple[tuple[str, ...], ...]


def plan_video(rng: np.random.Generator, n_frames: int, fps: int) -> VideoPlan:
    """Phases in surgical order with random durations; some videos skip a phase; tools per 25 frames."""
    names = phase_names()
    present = list(range(len(names)))
    if rng.random() < 0.3:
        present.remove(names.index("CleaningCoagulation"))
    if rng.random() < 0.15:
        present.remove(names.index("Preparation"))
    weights = np.array([_SCENES[names[k]].duration for k in present]) * rng.gamma(4.0, 0.25, len(present))
    lengths = np.maximum(fps, np.floor(weights / weights.sum() * n_frames)).astype(int)
    lengths[-1] = max(1, n_frames - int(lengths[:-1].sum()))
    phases = [k for k, n in zip(present, lengths, strict=False) for _ in range(n)][:n_frames]
    tools: list[tuple[str, ...]] = []
    current: tuple[str, ...] = ()
    for i, k in enumerate(phases):
        # a new tool set at each annotated frame and at each phase change
        if i % TOOL_EVERY == 0 or phases[i - 1] != k:
            current = _sample_tools(names[k], rng)
        tools.append(current)
    return VideoPlan(fps, tuple(phases), tuple(tools))


def _drift(rng: np.random.Generator, n: int, fps: int, sd: float) -> np.ndarray:
    """A stationary AR(1) track with spread `sd` and ~0.25 s memory (hue jitter, white-balance drift)."""
    rho = math.exp(-1.0 / (0.25 * fps))
    eps = rng.standard_normal(n) * sd
    out = np.empty(n)
    out[0] = eps[0]
    for i in range(1, n):
        out[i] = rho * out[i - 1] + math.sqrt(1 - rho * rho) * eps[i]
    return out


def _encode(path: Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int], crf: int) -> int:
    """H.264 yuv420p MP4; returns the number of frames written."""
    count = 0
    with av.open(str(path), mode="w") as container:
        # x264's macroblock-tree rate control (and threading) made identical runs encode differently;
        # without them a seed gives the same decoded frames every time.
        params = "threads=1:lookahead-threads=1:mbtree=0"
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": "veryfast", "crf": str(crf), "x264-params": params}
        )
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = count, Fraction(1, fps)
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def _write_labels(out_dir: Path, stem: str, plan: VideoPlan) -> None:
    names = phase_names()
    phase_dir, tool_dir = out_dir / "phase_annotations", out_dir / "tool_annotations"
    phase_dir.mkdir(parents=True, exist_ok=True)
    tool_dir.mkdir(parents=True, exist_ok=True)
    rows = ["Frame\tPhase"] + [f"{i}\t{names[k]}" for i, k in enumerate(plan.phases)]
    (phase_dir / f"{stem}-phase.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows = ["Frame\t" + "\t".join(TOOL_NAMES)]
    for i in range(0, len(plan.phases), TOOL_EVERY):
        rows.append(f"{i}\t" + "\t".join("1" if t in plan.tools[i] else "0" for t in TOOL_NAMES))
    (tool_dir / f"{stem}-tool.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _site_rng(site: str, seed: int, video: int) -> np.random.Generator:
    # crc32, not hash(): stable across processes, so a site's data is the same on every run
    return np.random.default_rng([seed, zlib.crc32(site.encode("utf-8")), video])


def synthesize_site(
    out_dir: Path, site: str, videos: int, shift: float, seed: int, *, seconds: float = 24.0, progress: bool = False
) -> list[Path]:
    """Write a Cholec80-layout site folder of `videos` short synthetic videos; returns the video paths."""
    if not isinstance(videos, int) or videos < 1 or videos > 99:
        raise ConfigError(f"videos must be an integer in 1..99, got {videos!r}")
    if not seconds > 0:
        raise ConfigError(f"seconds must be positive, got {seconds!r}")
    domain = SiteDomain(shift)
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    paths = []
    for v in tqdm(range(1, videos + 1), desc=f"synthesise {site}", disable=not progress, unit="video"):
        rng = _site_rng(site, seed, v)
        n_frames = max(len(phase_names()) * domain.fps, int(seconds * rng.uniform(0.85, 1.15) * domain.fps))
        plan = plan_video(rng, n_frames, domain.fps)
        layout = _Layout.draw(rng)
        hues = _drift(rng, n_frames, domain.fps, HUE_JITTER_DEG)
        camera = domain.camera
        casts = camera.cast_mean_deg + _drift(rng, n_frames, domain.fps, camera.cast_drift_deg)
        render = _Renderer(layout, camera, domain.size, rng, shift=shift)
        frames = (render(k, hues[i], casts[i], plan.tools[i], i / domain.fps, rng) for i, k in enumerate(plan.phases))
        path = out_dir / "videos" / f"video{v:02d}.mp4"
        written = _encode(path, frames, domain.fps, domain.size, domain.crf)
        if written != len(plan.phases):
            raise DataError(f"{path}: wrote {written} frames, expected {len(plan.phases)}")
        _write_labels(out_dir, f"video{v:02d}", plan)
        paths.append(path)
    return paths
