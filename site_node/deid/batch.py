"""Batch de-identification, shared by every entry point: sniff kinds, write-then-rename, quarantine, report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path

from tqdm import tqdm

from protocols.errors import DeidError
from site_node.deid.devices import check_device
from site_node.deid.dicom import DicomJob, deidentify_dicom
from site_node.deid.images import (
    ImageInfo,
    clean_image_bytes,
    inspect_image,
    verify_image,
)
from site_node.deid.keys import UidMapper
from site_node.deid.outofbody import (
    OutOfBodyDetector,
    blank_mask,
)
from site_node.deid.overlay import plan_masks
from site_node.deid.profile import DeidProfile
from site_node.deid.text_files import allowed_text
from site_node.deid.video import deidentify_video

log = logging.getLogger("site_node.deid")
REPORT_NAME = "deid-report.json"
QUARANTINE_DIR = "quarantine"
TEXT_SUFFIXES = {".txt", ".csv", ".tsv", ".json"}


class Kind(str, Enum):
    DICOM = "dicom"
    VIDEO = "video"
    IMAGE = "image"
    TEXT = "text"
    UNKNOWN = "unknown"


class Status(str, Enum):
    OK = "ok"
    QUARANTINED = "quarantined"


@dataclass
class DeidEntry:
    """One input file: its pseudonymous id, what it was, what happened. Never an original name."""

    pseudo_id: str
    kind: str
    status: str
    reason: str | None
    actions: dict[str, int]
    output: str | None


@dataclass
class DeidReport:
    entries: list[DeidEntry] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)

    def n_quarantined(self) -> int:
        return sum(1 for e in self.entries if e.status == Status.QUARANTINED.value)

    def to_dict(self) -> dict:
        totals: Counter[str] = Counter()
        for e in self.entries:
            totals.update(e.actions)
        summary = {
            "files": len(self.entries),
            "ok": len(self.entries) - self.n_quarantined(),
            "quarantined": self.n_quarantined(),
        }
        return {
            **self.header,
            "summary": {**summary, "actions": dict(sorted(totals.items()))},
            "entries": [asdict(e) for e in self.entries],
        }


def sniff(path: Path) -> Kind:
    """The file's kind from its first bytes (never from its name alone); zero-length files are refused."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise DeidError(f"unreadable file ({exc.strerror or type(exc).__name__})") from exc
    if not head:
        raise DeidError("zero-length file")
    if head[128:132] == b"DICM" or _dicom_without_preamble(head):
        return Kind.DICOM
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n":
        return Kind.IMAGE
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") and head[8:12] not in (
        b"heic",
        b"avif",
        b"mif1",
    ):
        return Kind.VIDEO
    if (
        head[:4] == b"\x1a\x45\xdf\xa3"
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x00\x00\x01\xba"
    ):
        return Kind.VIDEO
    if len(head) > 400 and any(all(head[o + k * n] == 0x47 for k in range(3)) for o, n in ((0, 188), (4, 192))):
        return Kind.VIDEO  # MPEG-TS (188-byte packets) or M2TS (192-byte packets with a 4-byte timestamp)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return Kind.TEXT
    return Kind.UNKNOWN


def _dicom_without_preamble(head: bytes) -> bool:
    """Raw DICOM datasets (no preamble) start with a group 0002 or 0008 element in little endian."""
    if len(head) < 8 or head[1] != 0 or head[0] not in (0x02, 0x08) or head[3] != 0:
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    implicit_len = int.from_bytes(head[4:8], "little")
    return explicit or 0 < implicit_len < 256


class DeidContext:
    """Shared state of one run: key, profile, detector, staging folder, progress bars."""

    def __init__(
        self, key: bytes, profile: DeidProfile, out_dir: Path, detector: OutOfBodyDetector, progress: bool
    ) -> None:
        self.key, self.profile, self.detector, self.out_dir = key, profile, detector, out_dir
        self.uids = UidMapper(key, profile.uid_root)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(".deid-staging-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run: never half-written output
        self.staging = Path(tempfile.mkdtemp(prefix=".deid-staging-", dir=out_dir))
        opts = {"disable": not progress, "file": sys.stderr, "mininterval": 0.5, "dynamic_ncols": True}
        self.files_bar = tqdm(desc="de-identify", unit="file", **opts)
        self.frames_bar = tqdm(desc="frames", unit="frame", position=1, leave=False, **opts)

    def frames(self, n: int) -> None:
        self.frames_bar.update(n)

    def tmp(self, suffix: str = "") -> Path:
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.staging)
        os.close(fd)
        return Path(name)

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.staging))

    def commit(self, tmp: Path, final: Path) -> str:
        """Move a finished file into place (same file system: atomic); returns its path under OUT_DIR."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return final.relative_to(self.out_dir).as_posix()

    def write(self, final: Path, data: bytes) -> str:
        tmp = self.tmp(final.suffix)
        tmp.write_bytes(data)
        return self.commit(tmp, final)

    def header(self) -> dict[str, str]:
        """The report's header: which tool, profile and out-of-body detector made the outputs."""
        return {
            "tool": "surgfed site_node deid",
            "profile": self.profile.name,
            "profile_digest": self.profile.digest,
            "out_of_body_detector": self.detector.name,
            "unknown_devices": self.profile.unknown_devices.value,
            "text_formats": ",".join(self.profile.text_formats) or "none (text files are quarantined)",
        }

    def close(self) -> None:
        self.files_bar.close()
        self.frames_bar.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def _reason(exc: BaseException, kind: Kind) -> str:
    if isinstance(exc, DeidError):
        return str(exc)
    # Library messages can quote file paths; the report must not, so only the type is kept.
    return f"unexpected {type(exc).__name__} while de-identifying a {kind.value} file"


def record(
    ctx: DeidContext,
    report: DeidReport,
    pseudo_id: str,
    kind: Kind,
    src: Path,
    work: Callable[[], tuple[dict[str, int], str]],
) -> None:
    """Run one unit of work; on any failure quarantine it by pseudonymous id, and go on with the batch."""
    qfile = ctx.out_dir / QUARANTINE_DIR / f"{pseudo_id}.json"
    try:
        actions, output = work()
    except Exception as exc:  # noqa: BLE001 - any failure must quarantine this input, never stop the batch
        reason = _reason(exc, kind)
        log.warning("quarantined %s as %s: %s", src, pseudo_id, reason, exc_info=not isinstance(exc, DeidError))
        record_data = {"pseudo_id": pseudo_id, "kind": kind.value, "reason": reason}
        ctx.write(qfile, json.dumps(record_data, indent=2).encode())
        report.entries.append(DeidEntry(pseudo_id, kind.value, Status.QUARANTINED.value, reason, {}, None))
    else:
        qfile.unlink(missing_ok=True)
        report.entries.append(
            DeidEntry(pseudo_id, kind.value, Status.OK.value, None, dict(sorted(actions.items())), output)
        )
    ctx.files_bar.update(1)


def deidentify_file(
    ctx: DeidContext, kind: Kind, src: Path, final: Path, known: Sequence[str] = ()
) -> tuple[dict[str, int], str]:
    """De-identify one non-image file into `final` (under OUT_DIR) via the staging folder."""
    if kind is Kind.DICOM:
        tmp = ctx.tmp(".dcm")
        job = DicomJob(ctx.key, ctx.profile, ctx.uids, ctx.detector, ctx.workdir(), ctx.frames)
        actions = deidentify_dicom(src, tmp, job)
        return actions, ctx.commit(tmp, final)
    if kind is Kind.VIDEO:
        device = check_device(src, ctx.profile)  # an unknown device only by the profile's explicit choice
        tmp = ctx.tmp(".mp4")
        result = deidentify_video(
            src,
            tmp,
            settings=ctx.profile.video,
            detector=ctx.detector,
            rules=ctx.profile.recorders,
            progress=ctx.frames,
        )
        return {**result.actions(), **device}, ctx.commit(tmp, final)
    if kind is Kind.TEXT:  # fail closed: rebuilt by an allowed label format, or quarantined
        data, actions = allowed_text(src, ctx.profile.text_formats, ctx.key, known)
        return actions, ctx.write(final, data)
    raise DeidError("unknown or unsupported file type")


def deidentify_image_group(ctx: DeidContext, report: DeidReport, items: Sequence[tuple[Path, Path, str]]) -> None:
    """Frames of one folder, in order: classify all, blank with a margin, mask, write each frame."""
    infos: dict[Path, ImageInfo] = {}
    for src, _, _ in items:
        try:
            infos[src] = inspect_image(src, ctx.detector)
        except DeidError:
            pass  # reported below, frame by frame
    readable = [src for src, _, _ in items if src in infos]
    flags = dict(
        zip(
            readable,
            blank_mask([infos[s].out_of_body for s in readable], ctx.profile.video.frame_folder_margin),
            strict=True,
        )
    )

    def work(src: Path, final: Path) -> tuple[dict[str, int], str]:
        info = infos.get(src) or inspect_image(src, ctx.detector)  # re-raises the inspection failure
        plan = plan_masks(ctx.profile.recorders, info.facts)
        data, actions = clean_image_bytes(
            info, blank=flags[src], plan=plan, jpeg_quality=ctx.profile.video.jpeg_quality
        )
        verify_image(data, info.fmt)
        ctx.frames(1)
        return actions, ctx.write(final, data)

    for src, final, pid in items:
        record(ctx, report, pid, Kind.IMAGE, src, partial(work, src, final))


def write_report(ctx: DeidContext, report: DeidReport) -> None:
    ctx.write(ctx.out_dir / REPORT_NAME, json.dumps(report.to_dict(), indent=2).encode())
