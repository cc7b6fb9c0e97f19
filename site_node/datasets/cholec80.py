"""Cholec80 adapter: `videoXX.mp4` with `videoXX-phase.txt` (tab-separated Frame, Phase names)."""

from __future__ import annotations

from pathlib import Path

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.labels import LabelMapper

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov")


def find_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(video id, video path, phase file) for every video under root/videos with a phase file."""
    videos_dir, phase_dir = root / "videos", root / "phase_annotations"
    if not videos_dir.is_dir() or not phase_dir.is_dir():
        raise DataError(f"{root}: a Cholec80 dataset needs videos/ and phase_annotations/ folders")
    pairs = []
    for video in sorted(p for p in videos_dir.iterdir() if p.suffix.lower() in VIDEO_EXTS):
        phase = phase_dir / f"{video.stem}-phase.txt"
        if not phase.is_file():
            raise DataError(f"{video}: no phase file {phase.name} in {phase_dir}")
        pairs.append((video.stem, video, phase))
    if not pairs:
        raise DataError(f"{videos_dir}: no videos ({', '.join(VIDEO_EXTS)})")
    return pairs


def read_phase_file(path: Path, task: TaskDefinition) -> dict[int, str]:
    """Frame number (the file's own numbering) -> canonical phase name; errors name file, line and value."""
    mapper = LabelMapper(task)
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
