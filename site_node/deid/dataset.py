"""Dataset-aware ingest: media and label files renamed together, references rewritten, label text scanned."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from protocols.errors import DeidError, UsageError
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
from site_node.deid.outofbody import ColourHeuristicDetector, OutOfBodyDetector
from site_node.deid.phi_scan import categories, scan
from site_node.deid.profile import load_profile
from site_node.deid.runner import (
    DeidContext,
    DeidReport,
    Kind,
    _header,
    deidentify_file,
    deidentify_image_group,
    record,
    sniff,
    write_report,
)

FORMATS = ("cholec80", "cholect50", "endoscapes", "coco", "csv")
_LAYOUT_WORDS = {
    "train", "val", "valid", "validation", "test", "images", "image", "imgs", "annotations", "annotation", "labels",
    "label", "videos", "video", "frames", "frame", "data", "coco", "instances", "split", "fold", "all", "phase",
    "tool", "annotation_coco", "annotation_ds_coco", "segmentation", "seg", "bbox", "cvs", "metadata", "dataset",
}  # fmt: skip
_MEDIA = {Kind.VIDEO, Kind.DICOM, Kind.IMAGE}
_OUT_SUFFIX = {Kind.VIDEO: ".mp4", Kind.DICOM: ".dcm"}


@dataclass
class _Run:
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


def _allowlisted(run: _Run, build: Callable[[str], Rewritten]) -> Callable[[Path], Rewritten]:
    """Rebuild a label file from its format's allow-list; the identifier scan checks the strings it kept."""

    def rewrite(src: Path) -> Rewritten:
        out = build(_read_text(src))
        _assert_clean(list(out.strings), run)
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


def _assert_clean(texts: list[str], run: _Run) -> None:
    findings = [f for t in texts for f in scan(t, sorted(run.originals, key=len, reverse=True))]
    if findings:
        raise DeidError(f"possible identifiers in label text ({', '.join(categories(findings))})")


def _plan_cholec80(run: _Run, files: list[tuple[Path, Kind | None]]) -> None:
    for src, kind in files:
        rel = src.relative_to(run.source)
        parts = rel.parts
        m = re.fullmatch(r"(.+)-(phase|tool)\.txt", rel.name)
        if len(parts) == 2 and parts[0] == "videos" and kind is Kind.VIDEO:
            p = run.case(src.stem)
            run.add_media(src, kind, Path("videos") / p, p)
        elif len(parts) == 2 and parts[0] in ("phase_annotations", "tool_annotations") and m:
            p = run.case(m[1])
            build = phase_txt if m[2] == "phase" else tool_txt
            run.labels.append((src, run.dest / parts[0] / f"{p}-{m[2]}.txt", f"{p}-{m[2]}", _allowlisted(run, build)))
        else:
            run.unknown.append(src)


def _plan_cholect50(run: _Run, files: list[tuple[Path, Kind | None]]) -> None:
    for src, kind in files:
        parts = src.relative_to(run.source).parts
        if len(parts) == 3 and parts[0] == "videos" and kind is Kind.IMAGE and re.fullmatch(r"\d{1,9}", src.stem):
            p = run.case(parts[1])
            run.add_media(src, kind, Path("videos") / p / (src.stem + src.suffix.lower()), f"{p}-{src.stem}")
        elif len(parts) == 2 and parts[0] == "videos" and kind in (Kind.VIDEO, Kind.DICOM):
            p = run.case(src.stem)
            run.add_media(src, kind, Path("videos") / p, p)
        elif len(parts) == 2 and parts[0] == "labels" and src.suffix.lower() == ".json":
            p = run.case(src.stem)
            run.labels.append((src, run.dest / "labels" / f"{p}.json", f"{p}-labels", _json_label(run, src.stem)))
        else:
            run.unknown.append(src)


def _json_label(run: _Run, case_id: str) -> Callable[[Path], Rewritten]:
    del case_id  # the file's own name was pseudonymised by the planner; nothing inside names the case
    return _allowlisted(run, lambda text: cholect50_json(_parse_json(text)))


def _image_name(run: _Run, stem: str, suffix: str) -> str:
    """Frame-numbered stems ('12_3400') keep the frame number; the case part becomes a pseudonym."""
    split = _frame_stem(stem)
    new = f"{run.case(split[0])}_{split[1]}" if split else run.case(stem, "image")
    return new + suffix.lower()


def _plan_coco(run: _Run, files: list[tuple[Path, Kind | None]]) -> None:
    claimed: set[Path] = set()
    by_name = {src.name: src for src, kind in files if kind is Kind.IMAGE}
    for src, _ in files:
        if src.suffix.lower() == ".json":
            data = _load_json_or_none(src)
            if isinstance(data, dict) and isinstance(data.get("images"), list):
                claimed |= _plan_coco_json(run, src, data, by_name)
    label_files = {s for s, _, _, _ in run.labels}
    for src, kind in files:
        if src in claimed or src in label_files:
            continue
        rel_dir = run.rel_dir(src.parent.relative_to(run.source))
        if kind in _MEDIA:
            name = _image_name(run, src.stem, src.suffix) if kind is Kind.IMAGE else run.case(src.stem)
            run.add_media(src, kind, rel_dir / name, Path(name).stem)
        else:
            run.unknown.append(src)


def _load_json_or_none(src: Path) -> Any:
    try:
        return json.loads(src.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        return None


def _plan_coco_json(run: _Run, src: Path, data: dict, by_name: dict[str, Path]) -> set[Path]:
    json_dir = src.parent
    new_json = (
        run.dest
        / run.rel_dir(json_dir.relative_to(run.source))
        / (src.name if run.dir_name(src.stem) == src.stem else f"{run.case(src.stem, 'label')}.json")
    )
    names: dict[str, str] = {}
    claimed = set()
    for image in data["images"]:
        old = str(image.get("file_name", "")) if isinstance(image, dict) else ""
        if not old:
            continue
        rel = Path(old)
        new_rel = run.rel_dir(rel.parent) / _image_name(run, rel.stem, rel.suffix)
        names[old] = new_rel.as_posix()
        found = next((c for c in (json_dir / rel, run.source / rel) if c.is_file()), by_name.get(rel.name))
        if found is not None and found not in claimed:
            claimed.add(found)
            run.add_media(found, Kind.IMAGE, new_json.parent.relative_to(run.dest) / new_rel, new_rel.stem)
    run.labels.append((src, new_json, run.case(str(src.relative_to(run.source)), "label"), _coco_label(run, names)))
    return claimed


def _coco_label(run: _Run, names: dict[str, str]) -> Callable[[Path], Rewritten]:
    def file_name(old: str) -> str:
        if old not in names:
            raise DeidError("images: an image without a file_name; the file is quarantined")
        return names[old]

    return _allowlisted(run, lambda text: coco_json(_parse_json(text), file_name, lambda v: run.case(v)))


def _plan_csv(run: _Run, files: list[tuple[Path, Kind | None]]) -> None:
    videos = [src for src, kind in files if kind in _MEDIA and kind is not Kind.IMAGE]
    stems = Counter(v.stem for v in videos)
    named: dict[Path, str] = {}  # video file -> its pseudonym; `or3.mp4` in two patients' folders stays two videos
    for src in videos:
        rel = src.relative_to(run.source).with_suffix("").as_posix()
        named[src] = run.case(src.stem if stems[src.stem] == 1 else rel)
    for src, kind in files:
        rel_dir = run.rel_dir(src.parent.relative_to(run.source))
        if kind in _MEDIA:
            name = _image_name(run, src.stem, src.suffix) if kind is Kind.IMAGE else named[src]
            run.add_media(src, kind, rel_dir / name, Path(name).stem)
        elif src.suffix.lower() == ".csv":
            pid = run.case(src.stem, "label")
            run.labels.append((src, run.dest / rel_dir / f"{pid}.csv", pid, _csv_label(run, src, named)))
        else:
            run.unknown.append(src)


def _csv_label(run: _Run, csv_src: Path, named: dict[Path, str]) -> Callable[[Path], Rewritten]:
    """A `video` cell becomes the pseudonymous file name of the video it names; its directory part is dropped."""
    by_stem: dict[str, list[str]] = {}
    for src, pid in named.items():
        by_stem.setdefault(src.stem, []).append(pid)

    def video(cell: str) -> str:
        ref = Path(cell.strip().replace("\\", "/"))
        for base in (csv_src.parent, run.source):
            if ref.suffix and (base / ref).resolve() in named:
                return named[(base / ref).resolve()] + ".mp4"
        found = by_stem.get(ref.stem if ref.suffix else ref.name, [])
        if len(found) > 1:
            raise DeidError("video column: a file name that several videos share, without their folder")
        return found[0] + ".mp4" if found else file_ref(cell, run.case)

    return _allowlisted(run, lambda text: labels_csv(text, video))


_PLANNERS = {
    "cholec80": _plan_cholec80,
    "cholect50": _plan_cholect50,
    "endoscapes": _plan_coco,
    "coco": _plan_coco,
    "csv": _plan_csv,
}


def _scan_files(source: Path) -> list[tuple[Path, Kind | None]]:
    files: list[tuple[Path, Kind | None]] = []
    for root, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            try:
                files.append((path, sniff(path)))
            except DeidError:
                files.append((path, None))  # zero-length or unreadable: quarantined as unknown
    return files


def _merge_reid(reid_map: Path, entries: dict[str, dict[str, str]]) -> None:
    """Append to the site's re-identification map (kept in the site home, never in any output)."""
    current: dict[str, Any] = {"version": 1, "entries": {}}
    if reid_map.exists():
        loaded = _load_json_or_none(reid_map)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("entries"), dict):
            raise DeidError(f"re-identification map {reid_map} is not a valid map; refusing to overwrite it")
        current = loaded
    current["entries"].update(entries)
    reid_map.parent.mkdir(parents=True, exist_ok=True)
    tmp = reid_map.with_name(f".{reid_map.name}.tmp")
    tmp.write_text(json.dumps(current, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, reid_map)


def deidentify_dataset(source: Path, fmt: str, dest: Path, key: bytes, *, reid_map: Path, progress: bool = True,
                       out_of_body: OutOfBodyDetector | None = None, profile: str = "basic") -> DeidReport:  # fmt: skip
    """Write the same dataset layout under `dest` with pseudonymised names and rewritten label references."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown dataset format {fmt!r}; expected one of {list(FORMATS)}")
    source, dest = Path(source).resolve(), Path(dest)
    if not source.is_dir():
        raise UsageError(f"dataset folder {source} does not exist")
    if dest.resolve() == source or source in dest.resolve().parents or dest.resolve() in source.parents:
        raise UsageError(f"the dataset folder and the output folder {dest} must not contain one another")
    if reid_map.resolve().is_relative_to(dest.resolve()):
        raise UsageError("the re-identification map must stay in the site home, outside the output folder")
    run = _Run(key, fmt, source, dest)
    files = _scan_files(source)
    _PLANNERS[fmt](run, files)
    ctx = DeidContext(key, load_profile(profile), dest, out_of_body or ColourHeuristicDetector(), progress)
    report = DeidReport(header={**_header(ctx), "dataset_format": fmt})
    ctx.files_bar.total = len(files)
    kinds = dict(files)
    try:
        for src, kind, final, pid in run.media:
            record(ctx, report, pid, kind, src, partial(deidentify_file, ctx, kind, src, final))
        for items in run.groups.values():
            deidentify_image_group(ctx, report, items)
        for src, final, pid, rewrite in run.labels:
            record(
                ctx,
                report,
                pid,
                Kind.TEXT,
                src,
                partial(_write_label, ctx, src, final, rewrite),
            )
        for src in run.unknown:
            pid = pseudonym(key, "input", str(src))
            kind = kinds.get(src) or Kind.UNKNOWN
            record(ctx, report, pid, kind, src, partial(_refuse, kind, fmt))
        _merge_reid(reid_map, run.reid)
        write_report(ctx, report)
    finally:
        ctx.close()
    return report


def _write_label(
    ctx: DeidContext, src: Path, final: Path, rewrite: Callable[[Path], Rewritten]
) -> tuple[dict[str, int], str]:
    out = rewrite(src)
    return {"labels_rewritten": 1, "label_fields_dropped": out.dropped}, ctx.write(final, out.data)


def _refuse(kind: Kind, fmt: str) -> tuple[dict[str, int], str]:
    raise DeidError(f"not part of the {fmt} layout ({kind.value} file); not copied")
