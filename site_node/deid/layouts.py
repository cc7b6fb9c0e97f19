"""Dataset layouts for de-identified ingest: which files are media or labels, their pseudonyms, label rewrites."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import DeidError
from site_node.deid.batch import Kind
from site_node.deid.keys import pseudonym
from site_node.deid.labels_allowlist import (
    Rewritten,
    cholect50_json,
    coco_json,
    file_ref,
    labels_csv,
    phase_txt,
    tool_txt,
)
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
    labels: list[tuple[Path, Path, str, Callable[[Path], Rewritten]]] = field(default_factory=list)
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


def _allowlisted(plan: DatasetPlan, build: Callable[[str], Rewritten]) -> Callable[[Path], Rewritten]:
    """Rebuild a label file from its format's allow-list; the identifier scan checks the strings it kept."""

    def rewrite(src: Path) -> Rewritten:
        out = build(_read_text(src))
        _assert_clean(list(out.strings), plan)
        return out

    return rewrite


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeidError(f"label file is not valid JSON (line {exc.lineno})") from exc


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
            plan.labels.append(
                (
                    src,
                    plan.dest / parts[0] / f"{p}-{m[2]}.txt",
                    f"{p}-{m[2]}",
                    _allowlisted(plan, phase_txt if m[2] == "phase" else tool_txt),
                )
            )
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


def _json_label(plan: DatasetPlan, case_id: str) -> Callable[[Path], Rewritten]:
    del case_id  # the file's own name was pseudonymised by the planner; nothing inside names the case
    return _allowlisted(plan, lambda text: cholect50_json(_parse_json(text)))


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


def _coco_label(plan: DatasetPlan, names: dict[str, str]) -> Callable[[Path], Rewritten]:
    def file_name(old: str) -> str:
        if old not in names:
            raise DeidError("images: an image without a file_name; the file is quarantined")
        return names[old]

    return _allowlisted(plan, lambda text: coco_json(_parse_json(text), file_name, lambda v: plan.case(v)))


def _plan_csv(plan: DatasetPlan, files: list[tuple[Path, Kind | None]]) -> None:
    videos = [src for src, kind in files if kind in _MEDIA and kind is not Kind.IMAGE]
    stems = Counter(v.stem for v in videos)
    named: dict[Path, str] = {}  # video file -> its pseudonym; `or3.mp4` in two patients' folders stays two videos
    for src in videos:
        rel = src.relative_to(plan.source).with_suffix("").as_posix()
        named[src] = plan.case(src.stem if stems[src.stem] == 1 else rel)
    for src, kind in files:
        rel_dir = plan.rel_dir(src.parent.relative_to(plan.source))
        if kind in _MEDIA:
            name = _image_name(plan, src.stem, src.suffix) if kind is Kind.IMAGE else named[src]
            plan.add_media(src, kind, rel_dir / name, Path(name).stem)
        elif src.suffix.lower() == ".csv":
            pid = plan.case(src.stem, "label")
            plan.labels.append((src, plan.dest / rel_dir / f"{pid}.csv", pid, _csv_label(plan, src, named)))
        else:
            plan.unknown.append(src)


def _csv_label(plan: DatasetPlan, csv_src: Path, named: dict[Path, str]) -> Callable[[Path], Rewritten]:
    """A `video` cell becomes the pseudonymous file name of the video it names; its directory part is dropped."""
    by_stem: dict[str, list[str]] = {}
    for src, pid in named.items():
        by_stem.setdefault(src.stem, []).append(pid)

    def video(cell: str) -> str:
        ref = Path(cell.strip().replace("\\", "/"))
        for base in (csv_src.parent, plan.source):
            if ref.suffix and (base / ref).resolve() in named:
                return named[(base / ref).resolve()] + ".mp4"
        found = by_stem.get(ref.stem if ref.suffix else ref.name, [])
        if len(found) > 1:
            raise DeidError("video column: a file name that several videos share, without their folder")
        return found[0] + ".mp4" if found else file_ref(cell, plan.case)

    return _allowlisted(plan, lambda text: labels_csv(text, video))


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
