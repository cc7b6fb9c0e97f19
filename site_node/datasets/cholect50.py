"""CholecT50/T45 adapter: `labels/VIDxx.json` instance vectors, named by the file's own `categories`, never by index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.datasets.common import VIDEO_EXTS, DatasetFormat, Found, frame_folder, line_of, load_json
from site_node.labels import AliasIndex, LabelledBox, TripletVocabulary
from site_node.store import FrameLabels, LabelKind

# Positions in a 15-value instance vector: triplet, instrument (+score, box xywh), verb, target (+score, box), phase.
_TRIPLET, _INSTRUMENT, _BOX, _VERB, _TARGET, _PHASE = 0, 1, slice(3, 7), 7, 8, 14
_KINDS = ("triplet", "instrument", "verb", "target")  # required category tables; `phase` is optional
_FPS_KEY = '"fps"'


@dataclass(frozen=True)
class Instance:
    """One triplet instance with its names as the label file spells them (None where the vector says -1)."""

    triplet: str | None
    instrument: str | None
    verb: str | None
    target: str | None
    box: tuple[float, float, float, float] | None  # the instrument's box, normalised xywh
    phase: str | None = None  # only when the file has a `phase` category table


def is_cholect50(path: Path) -> bool:
    data, _ = load_json(path)
    return isinstance(data, dict) and isinstance(data.get("annotations"), dict) and "categories" in data


def _categories(data: dict[str, Any], path: Path) -> dict[str, dict[int, str]]:
    """{kind: {id: name}} from a dict of dicts, a list of such dicts, or per-kind lists of {id, name}."""
    raw = data.get("categories")
    if isinstance(raw, list):
        raw = {k: v for d in raw if isinstance(d, dict) for k, v in d.items()}
    if not isinstance(raw, dict):
        raise DataError(
            f"{path}: `categories` must map triplet/instrument/verb/target to names, got {type(raw).__name__}"
        )
    out: dict[str, dict[int, str]] = {}
    for kind in (*_KINDS, "phase"):
        table = raw.get(kind, {})
        try:
            pairs = [(c["id"], c["name"]) for c in table] if isinstance(table, list) else list(table.items())
            out[kind] = {int(k): str(v) for k, v in pairs}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: categories.{kind} is not an id -> name table: {exc}") from exc
    return out


def _name(cats: dict[str, dict[int, str]], kind: str, value: Any, where: str) -> str | None:
    ident = int(value)
    if ident < 0:
        return None
    if ident not in cats[kind]:
        raise DataError(f"{where}: {kind} id {ident} is not in the file's categories")
    return cats[kind][ident]


def read_instances(path: Path) -> tuple[float, dict[int, list[Instance]]]:
    """(label frame rate, frame -> instances); DataError names file, line and the offending value."""
    data, text = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise DataError(f"{path}:1: a CholecT50 label file needs an `annotations` mapping of frame -> instances")
    cats = _categories(data, path)
    frames: dict[int, list[Instance]] = {}
    for key, vectors in data["annotations"].items():
        needle = '"' + str(key) + '"'
        where = f"{path}:{line_of(text, needle)}: frame {key!r}"
        if not str(key).isdigit() or not isinstance(vectors, list):
            raise DataError(f"{where}: expected a frame number mapped to a list of instance vectors")
        instances = []
        for vec in vectors:
            if not isinstance(vec, list) or len(vec) < 9:
                raise DataError(f"{where}: expected 15-value instance vectors, got {str(vec)[:60]}")
            try:
                box = tuple(float(v) for v in vec[_BOX])
                names = [
                    _name(cats, k, vec[i], where)
                    for k, i in zip(_KINDS, (_TRIPLET, _INSTRUMENT, _VERB, _TARGET), strict=False)
                ]
                phase = _name(cats, "phase", vec[_PHASE], where) if cats["phase"] and len(vec) > _PHASE else None
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where}: non-numeric instance vector {str(vec)[:60]}") from exc
            has_box = box[0] >= 0 and box[2] > 0 and box[3] > 0
            instances.append(
                Instance(
                    names[0], names[1], names[2], names[3], (box[0], box[1], box[2], box[3]) if has_box else None, phase
                )
            )
        frames[int(key)] = instances
    fps = data.get("fps", 1)
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise DataError(f"{path}:{line_of(text, _FPS_KEY)}: fps must be a positive number, got {fps!r}")
    return float(fps), frames


def _triplets(path: Path, task: TaskDefinition) -> FrameLabels:
    vocab = TripletVocabulary.of(task)
    fps, frames = read_instances(path)
    labels = {}
    for frame, instances in frames.items():
        names = set()
        for inst in instances:
            name = (
                inst.triplet
                if inst.triplet is not None
                else (",".join(n for n in (inst.instrument, inst.verb, inst.target) if n) or None)
            )
            if name is None:
                continue
            canonical = vocab.triplet([p.strip() for p in name.split(",")])
            if canonical is None:
                _, text = load_json(path)
                raise DataError(f"{path}:{line_of(text, name)}: frame {frame}: unknown triplet {name!r}")
            names.add(canonical)
        labels[frame] = frozenset(names)
    return FrameLabels(labels, fps=fps)


def _actions(path: Path, task: TaskDefinition) -> FrameLabels:
    verbs = AliasIndex.of(task)
    fps, frames = read_instances(path)
    labels, dropped = {}, 0
    for frame, instances in frames.items():
        found = set()
        for inst in instances:
            if inst.verb is None:
                continue
            name = verbs.canonical(inst.verb)
            if name is None:
                _, text = load_json(path)
                raise DataError(f"{path}:{line_of(text, inst.verb)}: frame {frame}: unknown verb {inst.verb!r}")
            found.add(name)
        if len(found) == 1:
            labels[frame] = found.pop()
        else:  # no action, or several instruments doing different things: no single answer to score
            dropped += 1
    return FrameLabels(labels, fps=fps, dropped=dropped)


def _phases(path: Path, task: TaskDefinition) -> FrameLabels:
    """The phase each frame's vectors carry (every vector of a frame repeats it), by the file's phase names."""
    names = AliasIndex.of(task)
    fps, frames = read_instances(path)
    labels = {}
    for frame, instances in frames.items():
        found = {inst.phase for inst in instances if inst.phase is not None}
        if len(found) > 1:
            raise DataError(f"{path}: frame {frame}: vectors name different phases {sorted(found)}")
        if found:
            raw = found.pop()
            name = names.canonical(raw)
            if name is None:
                _, text = load_json(path)
                raise DataError(
                    f"{path}:{line_of(text, raw)}: frame {frame}: unknown phase {raw!r}; "
                    f"expected one of {list(task.label_names)} or their synonyms"
                )
            labels[frame] = name
    return FrameLabels(labels, fps=fps)


def _boxes(path: Path, task: TaskDefinition) -> FrameLabels:
    names = AliasIndex.of(task)
    fps, frames = read_instances(path)
    labels = {}
    for frame, instances in frames.items():
        boxes = []
        for inst in instances:
            if inst.box is None or inst.instrument is None:
                continue
            name = names.canonical(inst.instrument)
            if name is None:
                _, text = load_json(path)
                raise DataError(
                    f"{path}:{line_of(text, inst.instrument)}: frame {frame}: unknown instrument {inst.instrument!r}"
                )
            x, y, w, h = inst.box
            box = LabelledBox(name, x, y, min(1.0, x + w), min(1.0, y + h))
            if box not in boxes:  # one instrument appears once per triplet it takes part in
                boxes.append(box)
        if boxes:
            labels[frame] = boxes
    return FrameLabels(labels, fps=fps)


def read_labels(path: Path, kind: LabelKind, task: TaskDefinition, video_id: str) -> FrameLabels:
    """Labels of one kind; one file is one video, so `video_id` is not needed to pick them."""
    readers = {
        LabelKind.TRIPLET: _triplets,
        LabelKind.ACTION: _actions,
        LabelKind.BOXES: _boxes,
        LabelKind.PHASE: _phases,
    }
    return readers[kind](Path(path), task)


def find_videos(root: Path) -> tuple[list[Found], dict[str, str]]:
    """`labels/VID.json` with `videos/VID/` (frame images, the file's fps) or `videos/VID.mp4`; or label files alone."""
    labels_dir = root.parent if root.is_file() else (root / "labels" if (root / "labels").is_dir() else root)
    files = [root] if root.is_file() else sorted(labels_dir.glob("*.json"))
    videos_dir = labels_dir.parent / "videos"
    found, skipped = [], {}
    for path in files:
        vid = path.stem
        try:
            fps, frames = read_instances(path)
        except DataError as exc:
            skipped[vid] = str(exc)
            continue
        kinds = {LabelKind.TRIPLET: path, LabelKind.ACTION: path}
        if any(i.box is not None for insts in frames.values() for i in insts):
            kinds[LabelKind.BOXES] = path
        if any(i.phase is not None for insts in frames.values() for i in insts):
            kinds[LabelKind.PHASE] = path
        folder = videos_dir / vid
        files_ = (
            [p for p in videos_dir.glob(f"{vid}.*") if p.suffix.lower() in VIDEO_EXTS] if videos_dir.is_dir() else []
        )
        if folder.is_dir():
            images = frame_folder(folder)
            found.append(Found(vid, folder, kinds, fps=fps, n_frames=max(images, default=-1) + 1))
        else:
            found.append(Found(vid, files_[0] if files_ else None, kinds, fps=fps))
    if not files:
        raise DataError(f"{root}: no CholecT50 label files (labels/VIDxx.json)")
    return found, skipped


def _reads(kind: LabelKind, path: Path) -> bool:
    kinds = (LabelKind.TRIPLET, LabelKind.ACTION, LabelKind.BOXES, LabelKind.PHASE)
    return path.suffix.lower() == ".json" and kind in kinds and is_cholect50(path)


FORMAT = DatasetFormat(
    name="cholect50",
    find=find_videos,
    looks_like=lambda folder: (folder / "labels").is_dir() and any((folder / "labels").glob("*.json")),
    reads=_reads,
    read=read_labels,
)
