"""What every dataset format shares: the format object, the `Found` record, cached JSON, frame and file-name helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.store import FrameLabels, LabelKind

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Found:
    """A video a dataset folder holds: its pixels (video file, frame folder, or None for labelled images)."""

    video_id: str
    media: Path | None
    labels: dict[LabelKind, Path] = field(default_factory=dict)
    fps: float | None = None  # the label file's frame rate, for frame folders
    n_frames: int | None = None  # for labelled images: highest frame + 1


Finder = Callable[[Path], tuple[list[Found], dict[str, str]]]
LabelReader = Callable[[Path, LabelKind, TaskDefinition, str], FrameLabels]


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format: how its videos are found, how its folder is recognised, which label files it reads.

    `reads(kind, path)` says whether `read` takes that label file for that kind; the registry asks the formats in
    its order, so a format that shares a suffix with a later one (CholecT50 and COCO JSON) must claim only its own.
    """

    name: str
    find: Finder  # a dataset folder (or one label file) -> (videos with their label files, skipped ones + reasons)
    looks_like: Callable[[Path], bool]  # does this folder have the format's layout?
    reads: Callable[[LabelKind, Path], bool]
    read: LabelReader  # (label file, kind, task, video id) -> the video's labels named by the task


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
