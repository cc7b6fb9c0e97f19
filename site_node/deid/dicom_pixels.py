"""DICOM pixel data: embedded video re-encapsulated after video de-identification; stills masked and checked."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.multival import MultiValue
from pydicom.uid import (
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP41F,
    MPEG4HP422D,
    MPEG4HP422DF,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MPEGTransferSyntaxes,
)

from protocols.errors import DeidError
from site_node.deid.images import strip_jpeg
from site_node.deid.outofbody import OutOfBodyDetector, blank_mask
from site_node.deid.overlay import MaskPlan, mask_array
from site_node.deid.profile import DeidProfile
from site_node.deid.video import deidentify_video

_H264 = {MPEG4HP41, MPEG4HP41F, MPEG4HP41BD, MPEG4HP41BDF, MPEG4HP422D, MPEG4HP422DF}
_MAX_FRAGMENT = 0xFFFFFFF0


@dataclass
class PixelJob:
    profile: DeidProfile
    detector: OutOfBodyDetector
    plan: MaskPlan
    workdir: Path
    progress: Callable[[int], None] | None = None


def _frame_rate(ds: Dataset) -> Fraction | None:
    if ds.get("CineRate"):
        return Fraction(int(ds.CineRate))
    if ds.get("FrameTime"):
        return Fraction(1000) / Fraction(str(ds.FrameTime))
    return None


def _video(ds: Dataset, ts: UID, job: PixelJob, counts: Counter[str]) -> tuple[UID, bool]:
    """Extract the encapsulated MPEG stream, de-identify it as a video, and encapsulate the result."""
    try:
        stream = next(generate_frames(ds.PixelData, number_of_frames=1))
    except (ValueError, StopIteration, KeyError) as exc:
        raise DeidError(f"the encapsulated video stream is damaged ({type(exc).__name__})") from exc
    src, dst = job.workdir / "embedded-video", job.workdir / "embedded-video-clean.mp4"
    src.write_bytes(stream)
    result = deidentify_video(
        src, dst, settings=job.profile.video, detector=job.detector, rules=job.profile.recorders,
        progress=job.progress, fps_hint=_frame_rate(ds), extra_plan=job.plan,
    )  # fmt: skip
    if result.width > 1920 or result.height > 1080 or result.rate > 60:
        raise DeidError("video above 1920x1080 or 60 frames/s has no DICOM H.264 transfer syntax")
    new_ts = ts if (ts in _H264 and not result.reencoded) else (MPEG4HP41 if result.rate <= 30 else MPEG4HP422D)
    data = dst.read_bytes()
    ds.PixelData = encapsulate([data], fragments_per_frame=max(1, math.ceil(len(data) / _MAX_FRAGMENT)), has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = result.frames
    ds.Rows, ds.Columns = result.height, result.width
    ds.FrameTime = f"{1000 / float(result.rate):.6g}"
    ds.CineRate = max(1, round(float(result.rate)))
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if result.reencoded:
        raw = result.width * result.height * 3 / 2 * result.frames
        _lossy(ds, "ISO_14496_10", raw / max(1, len(data)))
    counts.update(result.actions())
    counts["video_reencapsulated"] += 1
    return UID(new_ts), bool(job.plan)


def _multi(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return []
    value = ds[keyword].value
    return [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]


def _lossy(ds: Dataset, method: str, ratio: float) -> None:
    """After a lossy re-encode: PS3.3 C.7.6.1.1.5 keeps the history of every lossy step."""
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = [*_multi(ds, "LossyImageCompressionMethod"), method]
    ds.LossyImageCompressionRatio = [*_multi(ds, "LossyImageCompressionRatio"), f"{ratio:.4g}"]


def _decode(ds: Dataset, ts: UID, n: int) -> list[np.ndarray]:
    if ts == JPEGBaseline8Bit:
        frames = []
        for data in generate_frames(ds.PixelData, number_of_frames=n):
            with Image.open(io.BytesIO(data)) as img:
                frames.append(np.array(img))
        return frames
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - a missing decoder plugin raises several types
        raise DeidError(
            f"cannot decode {ts.name} pixel data to mask or check it ({type(exc).__name__}); "
            "install pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg on the site node"
        ) from exc
    return list(arr) if n > 1 else [arr]


def _thumb(frame: np.ndarray, width: int) -> np.ndarray:
    img = Image.fromarray(frame if frame.dtype == np.uint8 else (frame >> 8).astype(np.uint8))
    h = max(1, round(width * img.height / img.width))
    return np.asarray(img.convert("RGB").resize((width, h), Image.Resampling.BILINEAR))


def _blank_flags(frames: list[np.ndarray], ds: Dataset, job: PixelJob) -> list[bool]:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 3:
        return [False] * len(frames)  # the colour heuristic is for endoscopic colour images only
    flags = [bool(job.detector.is_out_of_body(_thumb(f, job.detector.thumbnail_width))) for f in frames]
    rate = _frame_rate(ds)
    margin = (
        math.ceil(job.profile.video.out_of_body_margin_s * float(rate))
        if rate
        else job.profile.video.frame_folder_margin
    )
    return blank_mask(flags, margin)


def _strip_fragments(ds: Dataset, n: int, counts: Counter[str]) -> None:
    """Keep the JPEG frames' pixels bit-for-bit and drop their APPn/COM segments (EXIF can hide there)."""
    frames = []
    for data in generate_frames(ds.PixelData, number_of_frames=n):
        clean, removed = strip_jpeg(data)
        frames.append(clean)
        counts["metadata_removed"] += removed
    ds.PixelData = encapsulate(frames, has_bot=True)


def _still(ds: Dataset, ts: UID, job: PixelJob, counts: Counter[str]) -> tuple[UID, bool]:
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    if not job.plan and not colour:
        return ts, False  # nothing to mask and no out-of-body check for grey-scale modalities
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = _decode(ds, ts, n)
    blank = _blank_flags(frames, ds, job)
    counts["frames"] += len(frames)
    if job.progress:
        job.progress(len(frames))
    if not job.plan and not any(blank):
        if ts == JPEGBaseline8Bit:
            _strip_fragments(ds, n, counts)
        return ts, False
    photometric = str(ds.get("PhotometricInterpretation", ""))
    fill = int(frames[0].max()) if photometric == "MONOCHROME1" else 0
    for i, frame in enumerate(frames):
        frame = frames[i] = np.array(frame)  # decoded arrays may be read-only views
        if blank[i]:
            frame[...] = fill
            counts["frames_blanked"] += 1
        else:
            counts["overlay_boxes_masked"] += mask_array(frame, job.plan, fill)
    return _write_back(ds, ts, frames, job), bool(job.plan)


def _write_back(ds: Dataset, ts: UID, frames: list[np.ndarray], job: PixelJob) -> UID:
    if ts == JPEGBaseline8Bit:
        encoded = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=job.profile.video.jpeg_quality)
            encoded.append(buf.getvalue())
        ds.PixelData = encapsulate(encoded, has_bot=True)
        if int(ds.get("SamplesPerPixel", 1)) == 3:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        _lossy(ds, "ISO_10918_1", sum(f.nbytes for f in frames) / max(1, sum(map(len, encoded))))
        return ts
    ds.PixelData = np.stack(frames).tobytes() if len(frames) > 1 else frames[0].tobytes()
    ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0  # pydicom decodes colour to RGB
    return ExplicitVRLittleEndian


def process_pixels(ds: Dataset, ts: UID, job: PixelJob, counts: Counter[str]) -> tuple[UID, bool]:
    """Returns the transfer syntax of the new pixel data and whether the Clean Pixel Data option applied."""
    if ts in MPEGTransferSyntaxes:
        return _video(ds, ts, job, counts)
    if "PixelData" not in ds:
        if job.plan:
            raise DeidError("float pixel data cannot be masked; no mask support for this pixel module")
        return ts, False
    return _still(ds, ts, job, counts)
