"""Cholec80 adapter: `videoXX.mp4` with `videoXX-phase.txt` (tab-separated Frame, Phase names) and tool files."""

from __future__ import annotations

from pathlib import Path

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.answer_format import TOOL_WORDS, tool_word
from site_node.labels import LabelMapper
from site_node.store import DataStore, VideoEntry

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
