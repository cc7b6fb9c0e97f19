"""Cholec80: `videos/videoXX.mp4`, `phase_annotations/videoXX-phase.txt` (Frame, Phase names) and tool files."""

from __future__ import annotations

import re
from pathlib import Path

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.answer_format import TOOL_WORDS, tool_word
from site_node.datasets.common import VIDEO_EXTS, DatasetFormat, Found
from site_node.labels import AliasIndex
from site_node.store import DataStore, FrameLabels, LabelKind, VideoEntry


def read_phase_file(path: Path, task: TaskDefinition) -> dict[int, str]:
    """Frame number (the file's own numbering) -> canonical phase name; errors name file, line and value."""
    mapper = AliasIndex.of(task)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read phase labels: {exc}") from exc
    if not lines or [c.strip().lower() for c in lines[0].split("\t")] != ["frame", "phase"]:
        raise DataError(
            f"{path}:1: expected header 'Frame<TAB>Phase', got {lines[0][:60]!r}" if lines else f"{path}: empty"
        )
    labels: dict[int, str] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise DataError(f"{path}:{lineno}: expected 'FRAME<TAB>PHASE', got {line[:60]!r}")
        name = mapper.canonical(parts[1])
        if name is None:
            raise DataError(
                f"{path}:{lineno}: unknown phase {parts[1].strip()!r}; expected one of {list(task.label_names)}"
            )
        labels[int(parts[0])] = name
    if not labels:
        raise DataError(f"{path}: no labelled frames")
    return labels


def read_labels(path: Path, kind: LabelKind, task: TaskDefinition, video_id: str) -> FrameLabels:
    return FrameLabels(read_phase_file(path, task))


def find_videos(root: Path) -> tuple[list[Found], dict[str, str]]:
    """`videos/X.mp4` + `phase_annotations/X-phase.txt`, or phase files alone (for scoring)."""
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


FORMAT = DatasetFormat(
    name="cholec80",
    find=find_videos,
    looks_like=lambda folder: (folder / "videos").is_dir() and (folder / "phase_annotations").is_dir(),
    reads=lambda kind, path: kind is LabelKind.PHASE and path.suffix.lower() == ".txt",
    read=read_labels,
)


def read_tool_file(path: Path) -> dict[int, tuple[str, ...]]:
    """Cholec80 `videoXX-tool.txt`: frame -> the present tools' words; errors name file, line and value."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read tool labels: {exc}") from exc
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if not header or header[0].lower() != "frame":
        raise DataError(
            f"{path}:1: expected a header 'Frame<TAB>Grasper<TAB>...', got {lines[0][:60]!r}"
            if lines
            else f"{path}: empty"
        )
    words = []
    for name in header[1:]:
        try:
            words.append(tool_word(name))
        except DataError as exc:
            raise DataError(
                f"{path}:1: unknown tool column {name!r}; expected names from {sorted(TOOL_WORDS)}"
            ) from exc
    rows: dict[int, tuple[str, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        parts = [p.strip() for p in line.split("\t")]
        if not line.strip():
            continue
        if len(parts) != len(header) or not parts[0].isdigit() or any(p not in ("0", "1") for p in parts[1:]):
            raise DataError(f"{path}:{lineno}: expected a frame number and {len(words)} 0/1 values, got {line[:60]!r}")
        rows[int(parts[0])] = tuple(w for w, p in zip(words, parts[1:], strict=False) if p == "1")
    return rows


def tool_file_for(store: DataStore, video: VideoEntry) -> Path | None:
    """The video's tool file: its 'tool' manifest label, else Cholec80's tool_annotations/ beside phase_annotations/."""
    if "tool" in video.labels:
        return store.path(video.labels["tool"])
    phase = store.path(video.labels["phase"])
    if phase.parent.name != "phase_annotations" or not phase.name.endswith("-phase.txt"):
        return None
    candidate = phase.parent.parent / "tool_annotations" / phase.name.replace("-phase.txt", "-tool.txt")
    return candidate if candidate.is_file() else None
