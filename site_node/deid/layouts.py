"""Dataset layouts for de-identified ingest: which files are media or labels, their pseudonyms, label rewrites."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import DeidError
from site_node.deid.batch import Kind
from site_node.deid.keys import pseudonym
from site_node.deid.phi_scan import categories, scan

_LAYOUT_WORDS = {
    "train", "val", "valid", "validation", "test", "images", "image", "imgs", "annotations", "annotation", "labels",
    "label", "videos", "video", "frames", "frame", "data", "coco", "instances", "split", "fold", "all", "phase",
    "tool", "annotation_coco", "annotation_ds_coco", "segmentation", "seg", "bbox", "cvs", "metadata", "dataset",
}  # fmt: skip
_MEDIA = {Kind.VIDEO, Kind.DICOM, Kind.IMAGE}
_OUT_SUFFIX = {Kind.VIDEO: ".mp4", Kind.DICOM: ".dcm"}


@dataclass
class DatasetPlan:
    """One ingest: the pseudonym scheme, the re-identification entries, and the work lists."""

    key: bytes
    fmt: str
    source: Path
    dest: Path
    reid: dict[str, dict[str, str]] = field(default_factory=dict)
    media: list[tuple[Path, Kind, Path, str]] = field(default_factory=list)
    groups: dict[Path, list[tuple[Path, Path, str]]] = field(default_factory=dict)
    labels: list[tuple[Path, Path, str, Callable[[Path], bytes]]] = field(default_factory=list)
    unknown: list[Path] = field(default_factory=list)
    originals: set[str] = field(default_factory=set)

    def case(self, case_id: str, what: str = "case") -> str:
        """The pseudonym of one case (video id, image stem); recorded for the site's re-identification map."""
        p = "v" + pseudonym(self.key, what, f"{self.fmt}|{self.source}|{case_id}", length=12)
        self.reid[p] = {"format": self.fmt, "source": str(self.source), "kind": what, "original": case_id}
        self.originals.add(case_id)
        return p

    def dir_name(self, name: str) -> str:
        tokens = re.split(r"[_\-.]", name.lower())
        if name and all(
            re.fullmatch(r"[a-z]*\d{0,4}", t) and (t.rstrip("0123456789") in _LAYOUT_WORDS | {""}) for t in tokens
        ):
            return name
        return "d" + self.case(name, "folder")[1:9]

    def rel_dir(self, rel: Path) -> Path:
        return Path(*[self.dir_name(part) for part in rel.parts]) if rel.parts else Path()

    def add_media(self, src: Path, kind: Kind, dest_rel: Path, pid: str) -> None:
        if kind is Kind.IMAGE:
            self.groups.setdefault(src.parent, []).append((src, self.dest / dest_rel, pid))
        else:
            self.media.append((src, kind, self.dest / dest_rel.with_suffix(_OUT_SUFFIX[kind]), pid))


def _frame_stem(stem: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"(.+?)[_-](\d+)", stem)
    return (m[1], m[2]) if m else None


def _text_label(plan: DatasetPlan, mapping: Callable[[], dict[str, str]]) -> Callable[[Path], bytes]:
    """Rewrite whole-word references to originals, then scan what is left."""

    def rewrite(src: Path) -> bytes:
        text = _read_text(src)
        for old, new in sorted(mapping().items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w]){re.escape(old)}(?![\w])", new, text)
        _assert_clean([text], plan)
        return text.encode("utf-8")

    return rewrite


def _read_text(src: Path) -> str:
    try:
        return src.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DeidError("label file is not UTF-8 text") from exc


def _assert_clean(texts: list[str], plan: DatasetPlan) -> None:
    findings = [f for t in texts for f in scan(t, sorted(plan.originals, key=len, reverse=True))]
    if findings:
        raise DeidError(f"possible identifiers in label text ({', '.join(categories(findings))})")


def _plan_cholec80(plan: DatasetPlan, files: list[tuple[Path, Kind | None]]) -> None:
    for src, kind in files:
        rel = src.relative_to(plan.source)
        parts = rel.parts
        m = re.fullmatch(r"(.+)-(phase|tool)\.txt", rel.name)
        if len(parts) == 2 and parts[0] == "videos" and kind is Kind.VIDEO:
            p = plan.case(src.stem)
            plan.add_media(src, kind, Path("videos") / p, p)
        elif len(parts) == 2 and parts[0] in ("phase_annotations", "tool_annotations") and m:
            p = plan.case(m[1])
            plan.labels.append((src, plan.dest / parts[0] / f"{p}-{m[2]}.txt", f"{p}-{m[2]}", _text_label(plan, dict)))
        else:
            plan.unknown.append(src)


def _plan_cholect50(plan: DatasetPlan, files: list[tuple[Path, Kind | None]]) -> None:
    for src, kind in files:
        parts = src.relative_to(plan.source).parts
        if len(parts) == 3 and parts[0] == "videos" and kind is Kind.IMAGE and re.fullmatch(r"\d{1,9}", src.stem):
            p = plan.case(parts[1])
            plan.add_media(src, kind, Path("videos") / p / (src.stem + src.suffix.lower()), f"{p}-{src.stem}")
        elif len(parts) == 2 and parts[0] == "videos" and kind in (Kind.VIDEO, Kind.DICOM):
            p = plan.case(src.stem)
            plan.add_media(src, kind, Path("videos") / p, p)
        elif len(parts) == 2 and parts[0] == "labels" and src.suffix.lower() == ".json":
            p = plan.case(src.stem)
            plan.labels.append((src, plan.dest / "labels" / f"{p}.json", f"{p}-labels", _json_label(plan, src.stem)))
        else:
            plan.unknown.append(src)


def _json_label(plan: DatasetPlan, case_id: str) -> Callable[[Path], bytes]:
    def rewrite(src: Path) -> bytes:
        data = _load_json(src)
        if isinstance(data, dict):
            for key in ("video", "video_id", "video_name", "name"):
                if key in data:
                    data[key] = plan.case(case_id)
        data = _replace_strings(data, {case_id: plan.case(case_id)})
        _assert_clean(list(_strings(data)), plan)
        return json.dumps(data).encode("utf-8")

    return rewrite


def _load_json(src: Path) -> Any:
    try:
        return json.loads(_read_text(src))
    except json.JSONDecodeError as exc:
        raise DeidError(f"label file is not valid JSON (line {exc.lineno})") from exc


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


def _replace_strings(data: Any, mapping: dict[str, str]) -> Any:
    if isinstance(data, str):
        return mapping.get(data, data)
    if isinstance(data, dict):
        return {_replace_strings(k, mapping): _replace_strings(v, mapping) for k, v in data.items()}
    if isinstance(data, list):
        return [_replace_strings(v, mapping) for v in data]
    return data


def _image_name(plan: DatasetPlan, stem: str, suffix: str) -> str:
    """Frame-numbered stems ('12_3400') keep the frame number; the case part becomes a pseudonym."""
    split = _frame_stem(stem)
    new = f"{plan.case(split[0])}_{split[1]}" if split else plan.case(stem, "image")
    return new + suffix.lower()


def _plan_coco(plan: DatasetPlan, files: list[tuple[Path, Kind | None]]) -> None:
    claimed: set[Path] = set()
    by_name = {src.name: src for src, kind in files if kind is Kind.IMAGE}
    for src, _ in files:
        if src.suffix.lower() == ".json":
            data = load_json_or_none(src)
            if isinstance(data, dict) and isinstance(data.get("images"), list):
                claimed |= _plan_coco_json(plan, src, data, by_name)
    label_files = {s for s, _, _, _ in plan.labels}
    for src, kind in files:
        if src in claimed or src in label_files:
            continue
        rel_dir = plan.rel_dir(src.parent.relative_to(plan.source))
        if kind in _MEDIA:
            name = _image_name(plan, src.stem, src.suffix) if kind is Kind.IMAGE else plan.case(src.stem)
            plan.add_media(src, kind, rel_dir / name, Path(name).stem)
        else:
            plan.unknown.append(src)


def load_json_or_none(src: Path) -> Any:
    try:
        return json.loads(src.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        return None


def _plan_coco_json(plan: DatasetPlan, src: Path, data: dict, by_name: dict[str, Path]) -> set[Path]:
    json_dir = src.parent
    new_json = (
        plan.dest
        / plan.rel_dir(json_dir.relative_to(plan.source))
        / (src.name if plan.dir_name(src.stem) == src.stem else f"{plan.case(src.stem, 'label')}.json")
    )
    names: dict[str, str] = {}
    claimed = set()
    for image in data["images"]:
        old = str(image.get("file_name", "")) if isinstance(image, dict) else ""
        if not old:
            continue
        rel = Path(old)
        new_rel = plan.rel_dir(rel.parent) / _image_name(plan, rel.stem, rel.suffix)
        names[old] = new_rel.as_posix()
        found = next((c for c in (json_dir / rel, plan.source / rel) if c.is_file()), by_name.get(rel.name))
        if found is not None and found not in claimed:
            claimed.add(found)
            plan.add_media(found, Kind.IMAGE, new_json.parent.relative_to(plan.dest) / new_rel, new_rel.stem)
    plan.labels.append((src, new_json, plan.case(str(src.relative_to(plan.source)), "label"), _coco_label(plan, names)))
    return claimed


def _coco_label(plan: DatasetPlan, names: dict[str, str]) -> Callable[[Path], bytes]:
    def rewrite(src: Path) -> bytes:
        data = _load_json(src)
        video_ids: dict[Any, int] = {}
        for image in data.get("images", []):
            if isinstance(image, dict):
                image["file_name"] = names.get(str(image.get("file_name", "")), image.get("file_name"))
                if "video_name" in image:
                    image["video_name"] = plan.case(str(image["video_name"]))
                if "video_id" in image:  # a hospital's case number: renumbered in order of appearance
                    image["video_id"] = video_ids.setdefault(image["video_id"], len(video_ids) + 1)
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        data["info"] = {"description": "de-identified by surgfed site_node", "version": str(info.get("version", ""))}
        _assert_clean(list(_strings(data)), plan)
        return json.dumps(data).encode("utf-8")

    return rewrite


def _plan_csv(plan: DatasetPlan, files: list[tuple[Path, Kind | None]]) -> None:
    for src, kind in files:
        rel_dir = plan.rel_dir(src.parent.relative_to(plan.source))
        if kind in _MEDIA:
            name = _image_name(plan, src.stem, src.suffix) if kind is Kind.IMAGE else plan.case(src.stem)
            plan.add_media(src, kind, rel_dir / name, Path(name).stem)
        elif src.suffix.lower() == ".csv":
            plan.labels.append(
                (
                    src,
                    plan.dest / rel_dir / f"{plan.case(src.stem, 'label')}.csv",
                    plan.case(src.stem, "label"),
                    _csv_label(plan),
                )
            )
        else:
            plan.unknown.append(src)


def _csv_label(plan: DatasetPlan) -> Callable[[Path], bytes]:
    def rewrite(src: Path) -> bytes:
        rows = list(csv.DictReader(io.StringIO(_read_text(src))))
        fields = list(rows[0].keys()) if rows else []
        if "video" not in fields:
            raise DeidError("CSV label file has no `video` column")
        for row in rows:
            ref = Path(str(row["video"]).strip())
            suffix = ".mp4" if ref.suffix else ""
            row["video"] = (ref.parent / (plan.case(ref.stem) + suffix)).as_posix() if ref.stem else ""
        _assert_clean([v for row in rows for k, v in row.items() if k != "video" and v] + fields, plan)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode("utf-8")

    return rewrite


LAYOUTS: dict[str, Callable[[DatasetPlan, list[tuple[Path, Kind | None]]], None]] = {
    "cholec80": _plan_cholec80,
    "cholect50": _plan_cholect50,
    "endoscapes": _plan_coco,
    "coco": _plan_coco,
    "csv": _plan_csv,
}


def plan_dataset(key: bytes, fmt: str, source: Path, dest: Path, files: list[tuple[Path, Kind | None]]) -> DatasetPlan:
    """What to write where for one dataset folder in format `fmt` (one of LAYOUTS), and what to refuse."""
    plan = DatasetPlan(key, fmt, source, dest)
    LAYOUTS[fmt](plan, files)
    return plan
