"""`site_node ingest`: de-identify a dataset into the site's store and record it in the manifest."""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from protocols.errors import DataError, UsageError
from site_node.audit import AuditLog
from site_node.audit_events import ingest_run
from site_node.case_keys import case_key
from site_node.datasets.registry import FORMATS, build_entries
from site_node.deid.keys import load_key
from site_node.home import SiteHome, owner_only
from site_node.store import DatasetEntry, DataStore, VideoEntry

log = logging.getLogger(__name__)


BLANK_WARN_SHARE = 0.10  # above this, the detector probably mistakes this site's footage for room scenes


@dataclass(frozen=True)
class IngestResult:
    dataset: DatasetEntry
    skipped: dict[str, str]
    frames: int = 0  # frames written to the store
    frames_blanked: int = 0  # of those, blanked as out-of-body
    detector: str = ""

    @property
    def blank_share(self) -> float:
        return self.frames_blanked / self.frames if self.frames else 0.0

    def blank_warning(self) -> str | None:
        """Most frames blanked usually means the detector does not fit this site's footage: say what to do."""
        if self.blank_share <= BLANK_WARN_SHARE:
            return None
        return (
            f"the out-of-body detector ({self.detector}) blanked {self.blank_share:.0%} of the frames; if this "
            "footage holds no room scenes, ingest again with `--out-of-body none`, or use the site's own "
            "out-of-body classifier (site_node/deid/outofbody.py, OutOfBodyDetector)"
        )


@dataclass(frozen=True)
class _Staged:
    statuses: Counter[str]
    frames: int
    blanked: int
    detector: str


def dataset_id(key: bytes, source: Path, fmt: str) -> str:
    """A keyed id: stable for the same source, revealing nothing about its path."""
    return "ds-" + hmac.new(key, f"{fmt}:{source.resolve()}".encode(), hashlib.sha256).hexdigest()[:12]


def _stage(source: Path, fmt: str, dest: Path, key: bytes, home: SiteHome, out_of_body: str, profile: str) -> _Staged:
    """Write the de-identified copy of `source` (same layout, pseudonymous names) under `dest`."""
    from site_node.deid.dataset import deidentify_dataset
    from site_node.deid.outofbody import detector_named

    try:
        detector = detector_named(out_of_body)
    except ValueError as exc:
        raise UsageError(f"--out-of-body: {exc}") from None
    report = deidentify_dataset(
        source, fmt, dest, key, reid_map=home.reid_map, progress=True, out_of_body=detector, profile=profile
    )
    for entry in report.entries:
        if entry.status != "ok":
            log.warning("quarantined %s (%s): %s", entry.pseudo_id, entry.kind, entry.reason)
    ok = [entry for entry in report.entries if entry.status == "ok"]
    return _Staged(
        Counter(str(entry.status) for entry in report.entries),
        sum(entry.actions.get("frames", 0) for entry in ok),
        sum(entry.actions.get("frames_blanked", 0) for entry in ok),
        detector.name,
    )


def _entries(root: Path, fmt: str, store: DataStore) -> tuple[list[VideoEntry], dict[str, str]]:
    """The manifest entries of a staged (de-identified) dataset: every video whose labels read cleanly."""
    return build_entries(root, fmt, store.root)


def ingest(
    home: SiteHome,
    source: Path,
    fmt: str,
    *,
    out_of_body: str = "colour",
    profile: str = "basic",
    max_blank_share: float | None = None,
) -> IngestResult:
    """De-identify first (nothing else touches the files before), then list what the engine may read.

    `max_blank_share` (default: the site's `[ingest] max_blank_share`, unset: no limit): an ingest that blanks
    more of the dataset's frames adds nothing to the store."""
    with owner_only():
        return _ingest(home, source, fmt, out_of_body, profile, max_blank_share)


def _ingest(
    home: SiteHome, source: Path, fmt: str, out_of_body: str, profile: str, max_blank_share: float | None
) -> IngestResult:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    if not Path(source).is_dir():
        raise UsageError(f"--source {source} is not a folder")
    if max_blank_share is not None and not 0 <= max_blank_share <= 1:
        raise UsageError(f"--max-blank-share must be in [0, 1], got {max_blank_share}")
    limit = home.config().max_blank_share if max_blank_share is None else max_blank_share
    store = DataStore(home.store_dir)
    key = load_key(home.key_file)
    ds_id = dataset_id(key, Path(source), fmt)
    dest = home.store_dir / "data" / ds_id
    staging = dest.with_name(ds_id + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staged = _stage(Path(source), fmt, staging, key, home, out_of_body, profile)
    statuses = staged.statuses
    _check_blank_share(staged, limit, staging)
    videos, skipped = _entries(staging, fmt, store)
    if not videos:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{source}: no usable videos; " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    keys = {v.video_id: case_key(key, store.path(v.video)) for v in videos}  # before the rename: paths name staging
    known = {v.case_key for d in store.datasets() if d.dataset_id != ds_id for v in d.videos if v.case_key}
    copies = sum(1 for k in keys.values() if k in known)
    if copies:
        log.warning("%d video(s) are copies of videos already in the store; each surgery trains as one unit", copies)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    videos = [
        VideoEntry(
            v.video_id,
            v.video.replace(staging.name, dest.name, 1),
            {k: p.replace(staging.name, dest.name, 1) for k, p in v.labels.items()},
            v.fps,
            v.n_frames,
            keys[v.video_id],
        )
        for v in videos
    ]
    entry = DatasetEntry(ds_id, fmt, tuple(videos), skipped)
    store.add(entry)
    ingest_run(AuditLog(home.audit_log), ds_id, fmt, len(videos), statuses + Counter({"skipped": len(skipped)}))
    result = IngestResult(entry, skipped, staged.frames, staged.blanked, staged.detector)
    if warning := result.blank_warning():
        log.warning("dataset %s: %s", ds_id, warning)
    return result


def _check_blank_share(staged: _Staged, limit: float | None, staging: Path) -> None:
    share = staged.blanked / staged.frames if staged.frames else 0.0
    if limit is None or share <= limit:
        return
    shutil.rmtree(staging, ignore_errors=True)
    raise DataError(
        f"the out-of-body detector ({staged.detector}) blanked {share:.0%} of the frames ({staged.blanked} of "
        f"{staged.frames}), above the site's max_blank_share {limit:g}; nothing was added to the store. If this "
        "footage holds no room scenes, use `--out-of-body none`, or the site's own out-of-body classifier"
    )
