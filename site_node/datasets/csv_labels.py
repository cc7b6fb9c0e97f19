"""CSV label files: `video,frame,action`, `video,frame,c1,c2,c3` (or `phase`), frames in the video's own numbering."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.datasets.common import VIDEO_EXTS, DatasetFormat, Found, frame_folder
from site_node.labels import AliasIndex, normalise
from site_node.store import FrameLabels, LabelKind

_KIND_COLUMNS = {LabelKind.ACTION: ("action", "verb"), LabelKind.PHASE: ("phase",), LabelKind.CVS: ("c1", "c2", "c3")}


@dataclass(frozen=True)
class Table:
    """A CSV's columns (lower case) and rows with line numbers; row errors per video (None: unattributable)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]
    errors: dict[str | None, str] = field(default_factory=dict)


def video_key(value: str) -> str:
    """'videos/video01.mp4' and 'video01' name the same video."""
    return Path(value.strip()).stem if Path(value.strip()).suffix else value.strip()


@lru_cache(maxsize=16)
def _table(path: Path, mtime: float) -> Table:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV labels: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    columns = tuple(c.strip().lower() for c in header or ())
    if "video" not in columns or "frame" not in columns:
        raise DataError(f"{path}:1: expected a header with `video` and `frame` columns, got {','.join(header or [])!r}")
    rows: list[tuple[int, dict[str, str]]] = []
    errors: dict[str | None, str] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        row = dict(zip(columns, (f.strip() for f in fields), strict=False))
        video = video_key(row.get("video", "")) or None
        if len(fields) != len(columns):
            errors.setdefault(
                video, f"{path}:{line}: expected {len(columns)} fields, got {len(fields)}: {','.join(fields)[:60]!r}"
            )
        elif not row["frame"].isdigit():
            errors.setdefault(video, f"{path}:{line}: frame must be a non-negative integer, got {row['frame']!r}")
        else:
            rows.append((line, row))
    return Table(columns, tuple(rows), errors)


def read_table(path: Path) -> Table:
    try:
        mtime = Path(path).stat().st_mtime
    except OSError as exc:
        raise DataError(f"{path}: cannot read CSV labels: {exc.strerror}") from exc
    return _table(Path(path).resolve(), mtime)


def _has_columns(table: Table, kind: LabelKind) -> bool:
    """CVS needs all three criteria; an action or phase column may go by either of its names."""
    test = all if kind is LabelKind.CVS else any
    return test(c in table.columns for c in _KIND_COLUMNS[kind])


def _value(kind: LabelKind, row: dict[str, str], task: TaskDefinition, where: str) -> object:
    if kind is LabelKind.CVS:
        return tuple(_criterion(row[c], task, f"{where}: {c}") for c in _KIND_COLUMNS[kind])
    column = next(c for c in _KIND_COLUMNS[kind] if c in row)
    name = AliasIndex.of(task).canonical(row[column])
    if name is None:
        raise DataError(f"{where}: unknown {kind.value} {row[column]!r}; expected one of {list(task.label_names)}")
    return name


def _criterion(text: str, task: TaskDefinition, where: str) -> bool:
    """A yes/no word, or a number in [0, 1] rounded at the task's threshold."""
    key = normalise(text)
    for value, words in ((True, task.extra.get("yes_words", [])), (False, task.extra.get("no_words", []))):
        if key in {normalise(w) for w in words}:
            return value
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise DataError(f"{where}: expected yes/no or a number in [0, 1], got {text!r}")
    return number >= float(task.extra.get("threshold", 0.5))


def read_labels(path: Path, kind: LabelKind, task: TaskDefinition, video_id: str) -> FrameLabels:
    """One video's rows as frame -> label (names mapped through the task's labels and synonyms)."""
    table = read_table(path)
    if not _has_columns(table, kind):
        raise DataError(f"{path}:1: no {'/'.join(_KIND_COLUMNS[kind])} column for {kind.value} labels")
    for key in (video_id, None):
        if key in table.errors:
            raise DataError(table.errors[key])
    labels: dict[int, object] = {}
    for line, row in table.rows:
        if video_key(row["video"]) != video_id:
            continue
        frame = int(row["frame"])
        if frame in labels:
            raise DataError(f"{path}:{line}: frame {frame} of video {video_id!r} is labelled twice")
        labels[frame] = _value(kind, row, task, f"{path}:{line}")
    if not labels:
        raise DataError(f"{path}: no rows for video {video_id!r}")
    return FrameLabels(labels)


def _media(value: str, csv_path: Path, root: Path) -> Path | None:
    """The video file or frame folder a `video` cell names: a path (from the CSV's folder or the root) or a name."""
    ref = Path(value.strip())
    for base in (csv_path.parent, root):
        if ref.suffix and (base / ref).is_file():
            return base / ref
    name = ref.stem if ref.suffix else ref.name
    for candidate in sorted(root.rglob(f"{name}*")):
        if candidate.is_file() and candidate.stem == name and candidate.suffix.lower() in VIDEO_EXTS:
            return candidate
        if candidate.is_dir() and candidate.name == name and frame_folder(candidate):
            return candidate
    return None


def find_videos(root: Path) -> tuple[list[Found], dict[str, str]]:
    """Every video named in the CSV files under root (or root itself), with the kinds each file's columns give."""
    files = [root] if root.is_file() else sorted(root.rglob("*.csv"))
    base = root.parent if root.is_file() else root
    found: dict[str, Found] = {}
    skipped: dict[str, str] = {}
    for path in files:
        try:
            table = read_table(path)
        except DataError as exc:
            skipped[path.name] = str(exc)
            continue
        kinds = [k for k in _KIND_COLUMNS if _has_columns(table, k)]
        for _, row in table.rows:
            vid = video_key(row["video"])
            prev = found.get(vid) or Found(vid, _media(row["video"], path, base), {})
            found[vid] = Found(vid, prev.media, {**prev.labels, **{k: path for k in kinds}})
    if not found and not skipped:
        raise DataError(f"{root}: no CSV label files with `video` and `frame` columns")
    return list(found.values()), skipped


FORMAT = DatasetFormat(
    name="csv",
    find=find_videos,
    looks_like=lambda folder: any(folder.glob("*.csv")),
    reads=lambda kind, path: path.suffix.lower() == ".csv" and kind in _KIND_COLUMNS,
    read=read_labels,
)
