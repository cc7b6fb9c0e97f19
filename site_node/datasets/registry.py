"""Dataset formats by name: which label files serve which tasks, how they are read, and where each frame's pixels are."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from protocols.errors import DataError, UsageError
from protocols.tasks import TaskDefinition
from site_node.store import FrameLabels, LabelKind, VideoEntry

FORMATS = ("cholec80", "cholect50", "endoscapes", "coco", "csv")
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


# -- helpers the format modules share -------------------------------------------------------------------------


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of `needle` (1 when absent): JSON errors name a line too."""
    pos = text.find(needle)
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1


@lru_cache(maxsize=16)
def _load_json(path: Path, mtime: float) -> tuple[Any, str]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read label file: {exc}") from exc
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        bad = text.splitlines()[exc.lineno - 1][max(0, exc.colno - 20) : exc.colno + 20] if text else ""
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}) near {bad!r}") from exc


def load_json(path: Path) -> tuple[Any, str]:
    """(data, text) of a JSON label file, cached while the file is unchanged; DataError names file and line."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file: {exc.strerror}") from exc
    return _load_json(path.resolve(), mtime)


def frame_number(stem: str) -> int | None:
    """'000123' -> 123 and 'video01_250' -> 250 (frame images named by their frame number)."""
    match = re.fullmatch(r"(?:.*?[_-])?(\d{1,9})", stem)
    return int(match.group(1)) if match else None


def video_of_stem(stem: str) -> str | None:
    """'video01_250' -> 'video01' (the Endoscapes / CholecT50-frames naming); None without a frame suffix."""
    match = re.fullmatch(r"(.+?)[_-](\d{1,9})", stem)
    return match.group(1) if match else None


def frame_folder(folder: Path) -> dict[int, Path]:
    """Frame images of a frame folder (CholecT50 `videos/VIDxx/000123.png`), by frame number."""
    return {
        n: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_EXTS and (n := frame_number(p.stem)) is not None
    }


@dataclass(frozen=True)
class Found:
    """A video a dataset folder holds: its pixels (video file, frame folder, or None for labelled images)."""

    video_id: str
    media: Path | None
    labels: dict[LabelKind, Path] = field(default_factory=dict)
    fps: float | None = None  # the label file's frame rate, for frame folders
    n_frames: int | None = None  # for labelled images: highest frame + 1


# -- what each format provides ---------------------------------------------------------------------------------


def _cholec80(root: Path) -> tuple[list[Found], dict[str, str]]:
    """Cholec80: `videos/X.mp4` + `phase_annotations/X-phase.txt`, or phase files alone (for scoring)."""
    if root.is_file():
        return [Found(re.sub(r"-phase$", "", root.stem), None, {LabelKind.PHASE: root})], {}
    phase_dir = root / "phase_annotations" if (root / "phase_annotations").is_dir() else root
    phases = {p.name[: -len("-phase.txt")]: p for p in sorted(phase_dir.glob("*-phase.txt"))}
    videos = {p.stem: p for p in sorted((root / "videos").glob("*")) if p.suffix.lower() in VIDEO_EXTS}
    skipped = {v: f"no phase file {v}-phase.txt in {phase_dir}" for v in videos if v not in phases}
    found = [Found(v, videos.get(v), {LabelKind.PHASE: p}) for v, p in phases.items()]
    if not found:
        raise DataError(f"{root}: no Cholec80 phase files (videoXX-phase.txt)")
    return found, skipped


def _finder(fmt: str) -> Callable[[Path], tuple[list[Found], dict[str, str]]]:
    from site_node.datasets import cholect50, coco, csv_labels, endoscapes

    finders = {
        "cholec80": _cholec80,
        "cholect50": cholect50.find_videos,
        "endoscapes": endoscapes.find_videos,
        "coco": coco.find_videos,
        "csv": csv_labels.find_videos,
    }
    if fmt not in finders:
        raise UsageError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    return finders[fmt]


def scan(root: Path, fmt: str) -> tuple[list[Found], dict[str, str]]:
    """Every video of a dataset folder (or one label file) with its label files; broken ones in `skipped`."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root} does not exist")
    return _finder(fmt)(root)


def read_labels(kind: LabelKind, path: Path, task: TaskDefinition, video_id: str) -> FrameLabels:
    """One video's labels of one kind from a label file, by the file's type; names mapped to the task's."""
    from site_node.datasets import cholec80, cholect50, coco, csv_labels, endoscapes

    suffix = Path(path).suffix.lower()
    if kind is LabelKind.PHASE and suffix == ".txt":
        return FrameLabels(cholec80.read_phase_file(path, task))
    if suffix == ".csv" and kind in (LabelKind.ACTION, LabelKind.CVS, LabelKind.PHASE):
        return csv_labels.read_labels(path, kind, task, video_id)
    cholect50_kinds = (LabelKind.TRIPLET, LabelKind.ACTION, LabelKind.BOXES, LabelKind.PHASE)
    if suffix == ".json" and kind in cholect50_kinds and cholect50.is_cholect50(path):
        return cholect50.read_labels(path, kind, task)
    if suffix == ".json" and kind is LabelKind.CVS:
        return endoscapes.read_labels(path, task, video_id)
    if suffix == ".json" and kind is LabelKind.BOXES:
        return coco.read_labels(path, task, video_id)
    raise DataError(f"{path}: no reader for {kind.value} labels in a {suffix or 'suffix-less'} file")


# The task whose vocabulary names each kind of label.
KIND_TASK = {
    LabelKind.PHASE: "phase",
    LabelKind.TRIPLET: "triplet",
    LabelKind.ACTION: "action",
    LabelKind.CVS: "cvs",
    LabelKind.BOXES: "localization",
}


def _usable_kinds(f: Found, fps: float, n_frames: int) -> tuple[dict[LabelKind, Path], dict[str, str]]:
    """The label kinds of a video that read cleanly and fit its frames; the others with their reasons."""
    from protocols.tasks import load_task

    good, bad = {}, {}
    for kind, path in f.labels.items():
        try:
            labels = read_labels(kind, path, load_task(KIND_TASK[kind]), f.video_id)
            check_frames(labels, f.media, path, fps=fps, n_frames=n_frames)
            good[kind] = path
        except DataError as exc:
            bad[f"{f.video_id} ({kind.value})"] = str(exc)
    return good, bad


def build_entries(root: Path, fmt: str, store_root: Path) -> tuple[list[VideoEntry], dict[str, str]]:
    """Manifest entries (paths relative to `store_root`) for a dataset folder; broken labels are skipped and listed."""
    from site_node.video import probe_video

    found, skipped = scan(root, fmt)
    rel = lambda p: Path(p).resolve().relative_to(Path(store_root).resolve()).as_posix()
    entries = []
    for f in found:
        try:
            if f.media is None and f.n_frames is None:
                raise DataError(f"no video or frame folder for the labels in {next(iter(f.labels.values())).name}")
            if f.media is not None and f.media.is_file():
                info = probe_video(f.media)
                fps, n_frames = info.fps, info.n_frames
            else:
                fps, n_frames = f.fps or 1.0, f.n_frames or 0
        except DataError as exc:
            skipped[f.video_id] = str(exc)
            continue
        kinds, bad = _usable_kinds(f, fps, n_frames)
        skipped.update(bad)
        if kinds:
            media = f.media if f.media is not None else next(iter(kinds.values())).parent
            entries.append(
                VideoEntry(f.video_id, rel(media), {k.value: rel(p) for k, p in kinds.items()}, fps, n_frames)
            )
    return entries, skipped


def detect(data: Path) -> list[tuple[str, str, Path]]:
    """(name, format, folder) of every dataset under a folder: the folder itself or its format-named subfolders."""
    data = Path(data)
    if not data.is_dir():
        raise UsageError(f"--data {data} is not a folder")
    subs = [(p.name, p.name, p) for p in sorted(data.iterdir()) if p.is_dir() and p.name in FORMATS]
    own = guess_format(data)
    return ([(data.name, own, data)] if own else []) + subs


def guess_format(folder: Path) -> str | None:
    """The format whose layout a folder has, or None."""
    if (folder / "videos").is_dir() and (folder / "phase_annotations").is_dir():
        return "cholec80"
    if (folder / "labels").is_dir() and any((folder / "labels").glob("*.json")):
        return "cholect50"
    for js in sorted(folder.glob("*.json")):
        try:
            data, _ = load_json(js)
        except DataError:
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return (
                "endoscapes"
                if any(isinstance(i, dict) and ("ds" in i or "C1" in i) for i in data["images"])
                else "coco"
            )
    return "csv" if any(folder.glob("*.csv")) else None


def frame_line(source: Path, frame: int) -> int:
    """The line of a label file that holds a frame (CholecT50 key, Cholec80 row, CSV row), for error messages."""
    try:
        text = Path(source).read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return 1
    for needle in (f'"{frame}"', f"\n{frame}\t", f",{frame},", f",{frame}\n", f"_{frame}."):
        if needle in text:
            return line_of(text, needle) + int(needle.startswith("\n"))  # the match begins on the line before
    return 1


def check_frames(
    fl: FrameLabels, media: Path | None, source: Path, *, fps: float | None = None, n_frames: int | None = None
) -> None:
    """DataError naming the label file, line and frame when a labelled frame has no pixels (beyond the video)."""
    from site_node.video import probe_video

    if fl.images:
        bad = [f for f in sorted(fl.labels) if f not in fl.images or not fl.images[f].is_file()]
        what = "has no image file"
    elif media is not None and media.is_dir():
        files = frame_folder(media)
        bad, what = [f for f in sorted(fl.labels) if f not in files], f"has no image in {media.name}/"
    elif media is not None and media.is_file():
        if fps is None or n_frames is None:
            info = probe_video(media)
            fps, n_frames = info.fps, info.n_frames
        bad = [f for f in sorted(fl.labels) if not 0 <= fl.video_frame(f, fps) < n_frames]
        what = f"is beyond the video's {n_frames} frames"
    else:
        return  # labels alone: scoring a predictions file without the videos
    if bad:
        raise DataError(f"{source}:{frame_line(source, bad[0])}: frame {bad[0]} {what}")


# -- pixels ----------------------------------------------------------------------------------------------------


def iter_frames(media: Path, fl: FrameLabels, frames: list[int], video_fps: float) -> Iterator[tuple[int, Image.Image]]:
    """(label frame, RGB image) for the wanted label frames, from images, a frame folder or a video file."""
    from site_node.video import sample_frames

    if fl.images or media.is_dir():
        files = fl.images or frame_folder(media)
        for f in frames:
            if f not in files:
                raise DataError(f"{media}: no image for frame {f}")
            try:
                with Image.open(files[f]) as im:
                    yield f, im.convert("RGB")
            except OSError as exc:
                raise DataError(f"{files[f]}: cannot read frame image: {exc}") from exc
        return
    wanted: dict[int, list[int]] = {}
    for f in frames:
        wanted.setdefault(fl.video_frame(f, video_fps), []).append(f)
    if not wanted:
        return
    every = max(1, math.gcd(*wanted))
    last = max(wanted)
    for index, image in sample_frames(media, every):
        for f in wanted.get(index, ()):
            yield f, image
        if index >= last:
            break
