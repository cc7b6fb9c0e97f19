"""Label files rebuilt from an allow-list per format: named keys and columns kept with checked values, the rest dropped.

Fail closed by structure: a value in a kept field must be what that field holds (a frame index, a label
of the task vocabulary, a box, a rater mean); anything else quarantines the file. Reasons never quote values.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocols.errors import DeidError, SurgFedError
from protocols.tasks import load_task
from site_node.answer_format import tool_word
from site_node.labels import AliasIndex, normalise

MAX_FRAME = 24 * 3600 * 60  # a day at 60 fps: a frame index, never room for an ID or an epoch date
MAX_PIXELS = 20_000
MAX_SMALL = 1_000  # ids, scores and box fractions inside a CholecT50 instance vector
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 _,.'()+-]{0,63}")
_LONG_DIGITS = re.compile(r"\d{6,}")
NameMap = Callable[[str], str]


@dataclass(frozen=True)
class Rewritten:
    """A rebuilt label file, how many keys/columns/fields were dropped, and the free strings it still holds."""

    data: bytes
    dropped: int
    strings: tuple[str, ...]


def _bad(where: str, expected: str) -> DeidError:
    return DeidError(f"{where}: expected {expected}; the file is quarantined")


def _int(value: Any, where: str, high: int, low: int = 0) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(where, f"an integer in [{low}, {high}]")
    return value


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _bad(where, f"a number in [{low:g}, {high:g}]")
    return float(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or _LONG_DIGITS.search(value):
        raise _bad(where, "a short category name")
    return value


def _label(task: str, value: str, where: str) -> str:
    name = AliasIndex.of(load_task(task)).canonical(value)
    if name is None:
        raise _bad(where, f"a {task} label of the task vocabulary")
    return name


def file_ref(value: str, case: NameMap) -> str:
    """A CSV `video` cell: only the file's name is kept, pseudonymised; the directory part is dropped."""
    name = re.split(r"[\\/]", value.strip())[-1]
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    if not stem:
        raise _bad("video column", "a video file name")
    return case(stem) + (".mp4" if suffix else "")


# -- Cholec80 text files ---------------------------------------------------------------------------
def phase_txt(text: str) -> Rewritten:
    """`Frame<TAB>Phase`: frame indices and phase names of the task vocabulary; extra columns dropped."""
    lines = text.splitlines()
    header = [c.strip().lower() for c in lines[0].split("\t")] if lines else []
    if header[:2] != ["frame", "phase"]:
        raise _bad("line 1", "the header Frame<TAB>Phase")
    rows, dropped = ["Frame\tPhase"], 0  # cells dropped, counted per row as for CSV
    for n, line in enumerate(lines[1:], start=2):
        if line.strip():
            parts = line.split("\t")
            if len(parts) < 2:
                raise _bad(f"line {n}", "a frame and a phase")
            dropped += len(parts) - 2
            rows.append(f"{_int(parts[0], f'line {n}', MAX_FRAME)}\t{_label('phase', parts[1], f'line {n}')}")
    return Rewritten(("\n".join(rows) + "\n").encode(), dropped, ())


def tool_txt(text: str) -> Rewritten:
    """`Frame<TAB>Grasper<TAB>...`: known tool columns with 0/1 values; unknown columns dropped."""
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if not header or header[0].lower() != "frame":
        raise _bad("line 1", "a header Frame<TAB>tool names")
    keep = []
    for i, name in enumerate(header[1:], start=1):
        try:
            tool_word(name)
            keep.append(i)
        except SurgFedError:
            pass
    rows, dropped = ["\t".join(["Frame"] + [header[i] for i in keep])], 0
    for n, line in enumerate(lines[1:], start=2):
        if line.strip():
            parts = line.split("\t")
            if len(parts) != len(header) or any(parts[i].strip() not in ("0", "1") for i in keep):
                raise _bad(f"line {n}", "a frame and one 0/1 value per tool")
            rows.append("\t".join([str(_int(parts[0], f"line {n}", MAX_FRAME))] + [parts[i].strip() for i in keep]))
            dropped += len(header) - 1 - len(keep)
    return Rewritten(("\n".join(rows) + "\n").encode(), dropped, tuple(header[i] for i in keep))


# -- CSV labels ------------------------------------------------------------------------------------
def _criterion(value: str, where: str) -> str:
    task = load_task("cvs")
    key = normalise(value)
    for out, words in (("1", task.extra.get("yes_words", [])), ("0", task.extra.get("no_words", []))):
        if key in {normalise(w) for w in words}:
            return out
    try:
        return f"{_number(float(value), where, 0.0, 1.0):g}"
    except ValueError:
        raise _bad(where, "yes/no or a number in [0, 1]") from None


_CSV_COLUMNS: dict[str, Callable[[str, str], str]] = {
    "frame": lambda v, w: str(_int(v, w, MAX_FRAME)),
    "phase": lambda v, w: _label("phase", v, w),
    "action": lambda v, w: _label("action", v, w),
    "verb": lambda v, w: _label("action", v, w),
    "c1": _criterion,
    "c2": _criterion,
    "c3": _criterion,
}


def labels_csv(text: str, video: NameMap) -> Rewritten:
    """`video,frame,...`: `video` maps a cell to the pseudonymous file name (no directory part) and the
    allow-listed label columns are checked; every other column (mrn, surgeon, notes) is dropped and counted."""
    reader = csv.reader(io.StringIO(text))
    header = [c.strip().lower() for c in next(reader, [])]
    if "video" not in header or "frame" not in header:
        raise _bad("line 1", "a header with `video` and `frame` columns")
    keep = [c for c in dict.fromkeys(header) if c == "video" or c in _CSV_COLUMNS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keep)
    rows = 0
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise _bad(f"line {reader.line_num}", f"{len(header)} fields")
        row = dict(zip(header, (f.strip() for f in fields), strict=True))
        where = f"line {reader.line_num}"
        writer.writerow([video(row[c]) if c == "video" else _CSV_COLUMNS[c](row[c], f"{where}, {c}") for c in keep])
        rows += 1
    return Rewritten(out.getvalue().encode(), (len(header) - len(keep)) * max(rows, 1), ())


# -- JSON labels -----------------------------------------------------------------------------------
def _category_tree(value: Any, where: str, depth: int = 0) -> tuple[Any, list[str]]:
    """CholecT50 `categories` in any of its shapes: names and small ids only."""
    if depth > 3:
        raise _bad(where, "a category table")
    if isinstance(value, dict):
        out, names = {}, []
        for k, v in value.items():
            key = str(_int(k, where, MAX_SMALL)) if str(k).isdigit() else _name(k, where)
            out[key], sub = _category_tree(v, where, depth + 1)
            names += [key, *sub]
        return out, names
    if isinstance(value, list):
        items = [_category_tree(v, where, depth + 1) for v in value]
        return [i for i, _ in items], [n for _, ns in items for n in ns]
    if isinstance(value, str):
        return _name(value, where), [value]
    return _int(value, where, MAX_SMALL), []


def cholect50_json(data: Any) -> Rewritten:
    """Keeps `categories`, `annotations` (frame -> instance vectors of small numbers) and `fps`."""
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise _bad("top level", "an object with `annotations`")
    cats, names = _category_tree(data.get("categories", {}), "categories")
    annotations = {}
    for frame, vectors in data["annotations"].items():
        where = "annotations"
        if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
            raise _bad(where, "lists of instance vectors")
        annotations[str(_int(frame, where, MAX_FRAME))] = [
            [_number(x, where, -MAX_SMALL, MAX_SMALL) for x in vec] for vec in vectors
        ]
    out: dict[str, Any] = {"categories": cats, "annotations": annotations}
    if "fps" in data:
        out["fps"] = _number(data["fps"], "fps", 0.001, 240.0)
    dropped = len(set(data) - set(out))
    return Rewritten(_dumps(out), dropped, tuple(names))


_IMAGE_NUMBERS = {"width": MAX_PIXELS, "height": MAX_PIXELS, "frame_id": MAX_FRAME}
_CRITERIA = ("C1", "C2", "C3", "c1", "c2", "c3")


def _coco_image(
    image: Any, new_id: int, ids: dict[str, dict[Any, int]], names: tuple[NameMap, NameMap]
) -> tuple[dict[str, Any], int]:
    if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
        raise _bad("images", "objects with a file_name")
    file_name, video_name = names
    out: dict[str, Any] = {"id": new_id, "file_name": file_name(image["file_name"])}
    for key, high in _IMAGE_NUMBERS.items():
        if key in image:
            out[key] = _int(image[key], f"images.{key}", high)
    if "video_name" in image:
        out["video_name"] = video_name(str(image["video_name"]))
    if "video_id" in image:  # a hospital's case number: renumbered in order of appearance
        out["video_id"] = ids["video"].setdefault(image["video_id"], len(ids["video"]) + 1)
    if "ds" in image:
        ds = image["ds"] if isinstance(image["ds"], list) else [image["ds"]]
        out["ds"] = [_number(v, "images.ds", 0.0, 1.0) for v in ds[:3]]
    for key in _CRITERIA:
        if key in image:
            out[key] = _number(image[key], f"images.{key}", 0.0, 1.0)
    if isinstance(image.get("is_ds_keyframe"), bool):
        out["is_ds_keyframe"] = image["is_ds_keyframe"]
    return out, len(set(image) - set(out))


def _coco_annotation(ann: Any, new_id: int, image_ids: dict[Any, int]) -> tuple[dict[str, Any], int]:
    if not isinstance(ann, dict) or ann.get("image_id") not in image_ids:
        raise _bad("annotations", "objects naming one of the file's images")
    out: dict[str, Any] = {"id": new_id, "image_id": image_ids[ann["image_id"]]}
    if "category_id" in ann:
        out["category_id"] = _int(ann["category_id"], "annotations.category_id", MAX_SMALL)
    if "bbox" in ann:
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise _bad("annotations.bbox", "a box of four numbers")
        out["bbox"] = [_number(v, "annotations.bbox", 0.0, MAX_PIXELS) for v in box]
    if "area" in ann:
        out["area"] = _number(ann["area"], "annotations.area", 0.0, float(MAX_PIXELS) ** 2)
    if ann.get("iscrowd") in (0, 1):
        out["iscrowd"] = ann["iscrowd"]
    return out, len(set(ann) - set(out))


def coco_json(data: Any, file_name: NameMap, video_name: NameMap) -> Rewritten:
    """COCO / Endoscapes: images (renumbered, renamed, sizes, frame, CVS values), annotations (category, box),
    categories (id, name); every other key is dropped; `info` is replaced."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _bad("top level", "an object with `images`")
    ids: dict[str, dict[Any, int]] = {"image": {}, "video": {}}
    images, dropped = [], len(set(data) - {"images", "annotations", "categories", "info"})
    for n, image in enumerate(data["images"], start=1):
        out, lost = _coco_image(image, n, ids, (file_name, video_name))
        ids["image"].setdefault(image.get("id"), n)
        images.append(out)
        dropped += lost
    annotations = []
    for n, ann in enumerate(data.get("annotations") or [], start=1):
        out, lost = _coco_annotation(ann, n, ids["image"])
        annotations.append(out)
        dropped += lost
    categories, names = [], []
    for cat in data.get("categories") or []:
        if not isinstance(cat, dict) or "name" not in cat:
            raise _bad("categories", "objects with an id and a name")
        kept = {"id": _int(cat.get("id"), "categories.id", MAX_SMALL), "name": _name(cat["name"], "categories.name")}
        if "supercategory" in cat:
            kept["supercategory"] = _name(cat["supercategory"], "categories.supercategory")
        categories.append(kept)
        names += [v for k, v in kept.items() if k != "id"]
        dropped += len(set(cat) - set(kept))
    out_data = {
        "info": {"description": "de-identified by surgfed site_node"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return Rewritten(_dumps(out_data), dropped, tuple(str(n) for n in names))


def _dumps(data: Any) -> bytes:
    return json.dumps(data).encode("utf-8")


TEXT_FORMATS = ("cholec80-phase", "cholec80-tool", "labels-csv", "cholect50-json", "coco-json")
