"""The site's local data store: a manifest of de-identified videos and label files; the engine reads only this."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from protocols.errors import DataError


class LabelKind(str, Enum):
    """What a manifest label file provides; one file may serve several (a CholecT50 JSON: triplet, action, boxes)."""

    PHASE = "phase"
    TRIPLET = "triplet"
    ACTION = "action"
    CVS = "cvs"
    BOXES = "boxes"


@dataclass(frozen=True)
class FrameLabels:
    """One video's labels of one kind, keyed by the label file's own frame numbering."""

    labels: dict[int, Any]
    fps: float | None = None  # the label file's frame rate; None: the video's own numbering (or unknown)
    images: dict[int, Path] = field(default_factory=dict)  # frame -> image file, where frames are images
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # frame -> (width, height) when known
    dropped: int = 0  # labelled frames left out by the task's rules (e.g. a frame with two actions)

    def video_frame(self, frame: int, video_fps: float) -> int:
        """The decoded-frame index of a label frame in the video file."""
        return frame if self.fps is None else int(round(frame * video_fps / self.fps))


@dataclass(frozen=True)
class VideoEntry:
    """One de-identified video and its label files, paths relative to the store."""

    video_id: str
    video: str
    labels: dict[str, str]  # label kind (a LabelKind value) -> relative path; a video may be a frame folder
    fps: float
    n_frames: int
    # Keyed hash of the de-identified content: two copies of one surgery share it (one privacy unit).
    case_key: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    dataset_id: str
    format: str
    videos: tuple[VideoEntry, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # pseudonymous id -> reason


class DataStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest_file = self.root / "manifest.json"

    def datasets(self) -> list[DatasetEntry]:
        if not self.manifest_file.is_file():
            return []
        try:
            raw = json.loads(self.manifest_file.read_text())
            return [
                DatasetEntry(
                    d["dataset_id"], d["format"], tuple(VideoEntry(**v) for v in d["videos"]), d.get("skipped", {})
                )
                for d in raw["datasets"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"data store manifest {self.manifest_file} is unreadable: {exc}") from exc

    def add(self, dataset: DatasetEntry) -> None:
        """Add or replace a dataset; the manifest is replaced atomically so a crash leaves the old one."""
        kept = [d for d in self.datasets() if d.dataset_id != dataset.dataset_id] + [dataset]
        data = {"datasets": [asdict(d) for d in kept]}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.manifest_file)

    def videos_with(self, label_kind: str) -> list[VideoEntry]:
        """Every video that has labels of this kind, across datasets."""
        return [v for d in self.datasets() for v in d.videos if label_kind in v.labels]

    def path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        if self.root.resolve() not in p.parents:
            raise DataError(f"manifest path {rel!r} escapes the data store")
        return p
