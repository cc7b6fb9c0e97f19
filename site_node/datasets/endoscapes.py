"""Endoscapes adapter: COCO JSON whose images carry CVS criteria C1-C3 in [0, 1] (mean of three raters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.datasets.coco import carries, coco_images, first_coco_data, label_files, unique_frames
from site_node.datasets.common import DatasetFormat, Found
from site_node.store import FrameLabels, LabelKind


def _criteria(entry: dict[str, Any], names: tuple[str, ...]) -> list[Any] | None:
    """[C1, C2, C3] from `ds` (Endoscapes2023) or per-criterion keys (C1 or c1); None when the image has none."""
    if "ds" in entry:
        return entry["ds"] if isinstance(entry["ds"], list) else [entry["ds"]]
    keys = [next((k for k in (n, n.lower()) if k in entry), None) for n in names]
    return None if all(k is None for k in keys) else [entry.get(k) if k else None for k in keys]


def read_labels(path: Path, kind: LabelKind, task: TaskDefinition, video_id: str) -> FrameLabels:
    """Per keyframe one bool per criterion: achieved when the raters' mean is >= the task's threshold (0.5)."""
    path = Path(path)
    threshold = float(task.extra.get("threshold", 0.5))
    names = task.label_names
    _, _, images = coco_images(path)
    mine = [im for im in images if im.video == video_id and im.entry.get("is_ds_keyframe", True) is not False]
    if not mine:
        raise DataError(f"{path}: no CVS keyframes of video {video_id!r}")
    unique_frames(mine, path)
    labels = {}
    for im in mine:
        values = _criteria(im.entry, names)
        if values is None:
            continue
        ok = len(values) == len(names) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in values
        )
        if not ok:
            raise DataError(
                f"{path}:{im.line}: {im.path.name}: expected {len(names)} criteria in [0, 1], got {values!r}"
            )
        labels[im.frame] = tuple(float(v) >= threshold for v in values)
    if not labels:
        raise DataError(f"{path}: video {video_id!r} has no images with C1-C3 values")
    return FrameLabels(
        labels, images={im.frame: im.path for im in mine}, sizes={im.frame: im.size for im in mine if im.size}
    )


def find_videos(root: Path) -> tuple[list[Found], dict[str, str]]:
    """Every video of every Endoscapes-style JSON under root (or root itself)."""
    found = []
    paths, skipped = label_files(root, "ds")
    for path in paths:
        videos: dict[str, int] = {}
        for im in coco_images(path)[2]:
            videos[im.video] = max(videos.get(im.video, 0), im.frame + 1)
        found += [Found(v, None, {LabelKind.CVS: path}, n_frames=n) for v, n in videos.items()]
    if not found and not skipped:
        raise DataError(f"{root}: no Endoscapes CVS files (a COCO JSON whose images carry `ds` or C1-C3)")
    return found, skipped


def _looks_like(folder: Path) -> bool:
    """The folder's first COCO JSON carries CVS values (`ds` or C1-C3 on its images)."""
    data = first_coco_data(folder)
    return data is not None and carries(data, "ds")


FORMAT = DatasetFormat(
    name="endoscapes",
    find=find_videos,
    looks_like=_looks_like,
    reads=lambda kind, path: kind is LabelKind.CVS and path.suffix.lower() == ".json",
    read=read_labels,
)
