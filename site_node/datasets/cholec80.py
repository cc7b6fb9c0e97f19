"""Cholec80: `videos/videoXX.mp4` with `phase_annotations/videoXX-phase.txt` (tab-separated Frame, Phase names)."""

from __future__ import annotations

import re
from pathlib import Path

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.datasets.common import VIDEO_EXTS, DatasetFormat, Found
from site_node.labels import AliasIndex
from site_node.store import FrameLabels, LabelKind


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
