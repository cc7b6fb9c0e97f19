"""Dataset formats by name: which formats there are, and the scans, label reads and manifest entries over them."""

from __future__ import annotations

from pathlib import Path

from protocols.errors import DataError, UsageError
from protocols.tasks import TaskDefinition
from site_node.datasets import cholec80, cholect50, coco, csv_labels, endoscapes
from site_node.datasets.common import DatasetFormat, Found
from site_node.datasets.frames import check_frames
from site_node.store import FrameLabels, LabelKind, VideoEntry

# In the order the formats are asked: folder layouts are guessed, and label files claimed, first come first served.
_ORDER: tuple[DatasetFormat, ...] = (
    cholec80.FORMAT,
    cholect50.FORMAT,
    endoscapes.FORMAT,
    coco.FORMAT,
    csv_labels.FORMAT,
)
BY_NAME: dict[str, DatasetFormat] = {f.name: f for f in _ORDER}
FORMATS = tuple(BY_NAME)

# The task whose vocabulary names each kind of label.
KIND_TASK = {
    LabelKind.PHASE: "phase",
    LabelKind.TRIPLET: "triplet",
    LabelKind.ACTION: "action",
    LabelKind.CVS: "cvs",
    LabelKind.BOXES: "localization",
}


def dataset_format(name: str) -> DatasetFormat:
    if name not in BY_NAME:
        raise UsageError(f"format must be one of {list(FORMATS)}, got {name!r}")
    return BY_NAME[name]


def scan(root: Path, fmt: str) -> tuple[list[Found], dict[str, str]]:
    """Every video of a dataset folder (or one label file) with its label files; broken ones in `skipped`."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root} does not exist")
    return dataset_format(fmt).find(root)


def read_labels(kind: LabelKind, path: Path, task: TaskDefinition, video_id: str) -> FrameLabels:
    """One video's labels of one kind from a label file, by the file's type; names mapped to the task's."""
    for fmt in _ORDER:
        if fmt.reads(kind, Path(path)):
            return fmt.read(Path(path), kind, task, video_id)
    suffix = Path(path).suffix.lower()
    raise DataError(f"{path}: no reader for {kind.value} labels in a {suffix or 'suffix-less'} file")


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

    def rel(p: Path) -> str:
        return Path(p).resolve().relative_to(Path(store_root).resolve()).as_posix()

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
    """The first format whose layout a folder has, or None."""
    return next((f.name for f in _ORDER if f.looks_like(folder)), None)
