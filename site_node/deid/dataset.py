"""Dataset-aware ingest: media and label files renamed together, references rewritten, label text scanned."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from protocols.errors import DeidError, UsageError
from site_node.datasets.registry import FORMATS
from site_node.deid.batch import (
    DeidContext,
    DeidReport,
    Kind,
    deidentify_file,
    deidentify_image_group,
    record,
    sniff,
    write_report,
)
from site_node.deid.keys import pseudonym
from site_node.deid.labels_allowlist import Rewritten
from site_node.deid.layouts import load_json_or_none, plan_dataset
from site_node.deid.outofbody import ColourHeuristicDetector, OutOfBodyDetector
from site_node.deid.profile import load_profile


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
        loaded = load_json_or_none(reid_map)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("entries"), dict):
            raise DeidError(f"re-identification map {reid_map} is not a valid map; refusing to overwrite it")
        current = loaded
    current["entries"].update(entries)
    reid_map.parent.mkdir(parents=True, exist_ok=True)
    tmp = reid_map.with_name(f".{reid_map.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key back to patients: owner only
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(current, indent=1, sort_keys=True))
    os.replace(tmp, reid_map)


def deidentify_dataset(
    source: Path,
    fmt: str,
    dest: Path,
    key: bytes,
    *,
    reid_map: Path,
    progress: bool = True,
    out_of_body: OutOfBodyDetector | None = None,
    profile: str = "basic",
) -> DeidReport:
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
    files = _scan_files(source)
    plan = plan_dataset(key, fmt, source, dest, files)
    ctx = DeidContext(key, load_profile(profile), dest, out_of_body or ColourHeuristicDetector(), progress)
    report = DeidReport(header={**ctx.header(), "dataset_format": fmt})
    ctx.files_bar.total = len(files)
    kinds = dict(files)
    try:
        for src, kind, final, pid in plan.media:
            record(ctx, report, pid, kind, src, partial(deidentify_file, ctx, kind, src, final))
        for items in plan.groups.values():
            deidentify_image_group(ctx, report, items)
        for src, final, pid, rewrite in plan.labels:
            record(
                ctx,
                report,
                pid,
                Kind.TEXT,
                src,
                partial(_write_label, ctx, src, final, rewrite),
            )
        for src in plan.unknown:
            pid = pseudonym(key, "input", str(src))
            kind = kinds.get(src) or Kind.UNKNOWN
            record(ctx, report, pid, kind, src, partial(_refuse, kind, fmt))
        _merge_reid(reid_map, plan.reid)
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
