"""De-identify files and folders (`site_node deid`): walk the inputs, group frame folders, run the batch."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from protocols.errors import DeidError, UsageError
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
from site_node.deid.outofbody import ColourHeuristicDetector, OutOfBodyDetector
from site_node.deid.profile import load_profile


def _walk(inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    out_abs = out_dir.resolve()
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"input {path} does not exist")
        resolved = path.resolve()
        if resolved == out_abs or out_abs in resolved.parents or resolved in out_abs.parents:
            raise UsageError(f"input {path} and the output folder {out_dir} must not contain one another")
        if path.is_file():
            files.append(path)
            continue
        for root, dirs, names in os.walk(path):
            dirs.sort()
            files.extend(Path(root) / n for n in sorted(names))
    return files


def _natural(path: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _frame_names(srcs: list[Path]) -> list[str]:
    """Numeric frame names (000123.png) are indices that labels use: keep them; rename anything else."""
    if all(re.fullmatch(r"\d{1,9}", s.stem) for s in srcs):
        return [s.stem + s.suffix.lower() for s in srcs]
    ordered = sorted(srcs, key=_natural)
    index = {p: i for i, p in enumerate(ordered)}
    return [f"{index[s]:06d}{s.suffix.lower()}" for s in srcs]


def deidentify_paths(
    inputs: Sequence[Path],
    out_dir: Path,
    key: bytes,
    profile: str = "basic",
    *,
    progress: bool = True,
    out_of_body: OutOfBodyDetector | None = None,
) -> DeidReport:
    """De-identify every file under `inputs` into `out_dir`; the report is also written as deid-report.json."""
    files = _walk(inputs, out_dir)
    ctx = DeidContext(key, load_profile(profile), Path(out_dir), out_of_body or ColourHeuristicDetector(), progress)
    report = DeidReport(header=ctx.header())
    ctx.files_bar.total = len(files)
    try:
        kinds = {f: _kind(f) for f in files}
        known = [f.stem for f in files if kinds[f] not in (Kind.TEXT, Kind.UNKNOWN) and len(f.stem) >= 3]
        groups: dict[Path, list[Path]] = {}
        for f in files:
            if kinds[f] is Kind.IMAGE:
                groups.setdefault(f.parent.resolve(), []).append(f)
                continue
            pid = pseudonym(key, "input", str(f.resolve()))
            sniffed = kinds[f]
            kind = sniffed if isinstance(sniffed, Kind) else Kind.UNKNOWN
            final = _plain_output(ctx.out_dir, kind, pid, f)
            record(ctx, report, pid, kind, f, partial(_dispatch, ctx, sniffed, f, final, known))
        for folder, srcs in groups.items():
            srcs.sort(key=_natural)  # frame order decides the out-of-body margin
            folder_id = pseudonym(key, "folder", str(folder))
            names = _frame_names(srcs)
            items = [
                (s, ctx.out_dir / "images" / folder_id / n, f"{folder_id}-{Path(n).stem}")
                for s, n in zip(srcs, names, strict=True)
            ]
            deidentify_image_group(ctx, report, items)
        write_report(ctx, report)
    finally:
        ctx.close()
    return report


def _kind(path: Path) -> Kind | DeidError:
    try:
        return sniff(path)
    except DeidError as exc:
        return exc


def _dispatch(
    ctx: DeidContext, kind: Kind | DeidError, src: Path, final: Path, known: Sequence[str]
) -> tuple[dict[str, int], str]:
    if isinstance(kind, DeidError):
        raise kind
    return deidentify_file(ctx, kind, src, final, known)


def _plain_output(out_dir: Path, kind: Kind, pid: str, src: Path) -> Path:
    suffix = {Kind.DICOM: ".dcm", Kind.VIDEO: ".mp4"}.get(kind, src.suffix.lower() if kind is Kind.TEXT else "")
    return out_dir / kind.value / f"{pid}{suffix}"
