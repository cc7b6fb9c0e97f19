"""JPEG/PNG frames: metadata stripped (losslessly where pixels stay), out-of-body frames blanked, overlays masked."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from protocols.errors import DeidError
from site_node.deid.outofbody import OutOfBodyDetector
from site_node.deid.overlay import DeviceFacts, MaskPlan

IMAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png"}
# APP0 'JFIF' (no thumbnail) and APP14 'Adobe' decide how colours decode; every other APPn and COM goes.
_KEEP_APP = {0xE0: b"JFIF\x00", 0xEE: b"Adobe"}


def _scan_end(data: bytes, pos: int) -> int:
    """Offset of the first marker after entropy-coded data (byte stuffing and restart markers skipped)."""
    while True:
        i = data.find(b"\xff", pos)
        if i < 0 or i + 1 >= len(data):
            raise DeidError("truncated JPEG: the image data has no end marker")
        nxt = data[i + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos = i + 2
        elif nxt == 0xFF:
            pos = i + 1
        else:
            return i


def _keep_segment(marker: int, segment: bytes) -> bool:
    if marker == 0xFE:  # COM
        return False
    if 0xE0 <= marker <= 0xEF:
        sig = _KEEP_APP.get(marker)
        if sig is None or not segment[2:].startswith(sig):
            return False
        # A JFIF APP0 longer than 16 bytes carries a thumbnail of the image.
        return marker != 0xE0 or len(segment) == 16
    return True


def strip_jpeg(data: bytes) -> tuple[bytes, int]:
    """Drop EXIF, XMP, ICC, maker notes, comments, thumbnails and trailing data; the pixels are untouched."""
    if data[:3] != b"\xff\xd8\xff":
        raise DeidError("not a JPEG stream")
    out, pos, removed = bytearray(b"\xff\xd8"), 2, 0
    while True:
        if pos + 1 >= len(data) or data[pos] != 0xFF:
            raise DeidError("truncated or malformed JPEG: expected a marker")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            raise DeidError("truncated JPEG")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            out += b"\xff\xd9"
            removed += int(len(data) - pos > 2)  # bytes after EOI (e.g. appended preview images)
            return bytes(out), removed
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes((0xFF, marker))
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        segment = data[pos : pos + length]
        if length < 2 or len(segment) < length:
            raise DeidError("truncated JPEG: a marker segment is cut short")
        if _keep_segment(marker, segment):
            out += bytes((0xFF, marker)) + segment
        else:
            removed += 1
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            end = _scan_end(data, pos)
            out += data[pos:end]
            pos = end


@dataclass(frozen=True)
class ImageInfo:
    """One inspected frame: format, size, device facts from EXIF, and the out-of-body decision."""

    path: Path
    fmt: str
    facts: DeviceFacts
    out_of_body: bool


def _exif_facts(img: Image.Image) -> tuple[str, str]:
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF is dropped anyway; it must not stop the frame
        return "", ""
    return str(exif.get(0x010F, "") or ""), str(exif.get(0x0110, "") or "")


def inspect_image(path: Path, detector: OutOfBodyDetector) -> ImageInfo:
    """Decode one frame (JPEG at reduced scale) to classify it; raises DeidError on damaged files."""
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
            if fmt not in IMAGE_FORMATS:
                raise DeidError(f"unsupported image format {fmt or 'unknown'}")
            width, height = img.size
            make, model = _exif_facts(img)
            if fmt == "JPEG":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # DCT scaling: fast decode
            small = img.convert("RGB")
            tw = max(8, detector.thumbnail_width)
            small = small.resize((tw, max(1, round(tw * height / width))), Image.Resampling.BILINEAR)
            rgb = np.asarray(small)
    except DeidError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DeidError(f"truncated or unreadable image ({type(exc).__name__})") from exc
    facts = DeviceFacts(width=width, height=height, manufacturer=make, model=model)
    return ImageInfo(path=path, fmt=fmt, facts=facts, out_of_body=bool(detector.is_out_of_body(rgb)))


def _clean_copy(img: Image.Image) -> Image.Image:
    clean = img.copy()
    clean.info = {}  # ICC profile, EXIF, XMP, text chunks and comments live here; none are written
    return clean


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img = img if img.mode in ("RGB", "L", "CMYK") else img.convert("RGB")
        img.save(buf, format="JPEG", quality=quality, optimize=False)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def clean_image_bytes(
    info: ImageInfo, *, blank: bool, plan: MaskPlan, jpeg_quality: int
) -> tuple[bytes, dict[str, int]]:
    """The de-identified file content for one frame, and the actions taken."""
    actions = {"frames": 1, "frames_blanked": int(blank), "overlay_boxes_masked": 0, "metadata_removed": 0}
    raw = info.path.read_bytes()
    if info.fmt == "JPEG" and not blank and not plan:
        data, removed = strip_jpeg(raw)
        actions["metadata_removed"] = removed
        return data, actions
    try:
        with Image.open(io.BytesIO(raw)) as src:
            src.load()
            actions["metadata_removed"] = len(src.info)
            img = _clean_copy(src)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DeidError(f"truncated or unreadable image ({type(exc).__name__})") from exc
    if blank:
        img = Image.new(img.mode, img.size, 0)
    elif plan:
        draw = ImageDraw.Draw(img)
        for x0, y0, x1, y1 in plan.boxes:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=0)
        actions["overlay_boxes_masked"] = len(plan.boxes)
    return _encode(img, info.fmt, jpeg_quality), actions


_PNG_ALLOWED = {"dpi", "gamma", "transparency", "srgb"}


def verify_image(data: bytes, fmt: str) -> None:
    """Fail closed unless the written frame decodes and carries no metadata segments or chunks."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            kind, extra = img.format, set(img.info) - _PNG_ALLOWED if fmt == "PNG" else set()
    except (OSError, ValueError, SyntaxError) as exc:
        raise DeidError(f"the written image cannot be re-read ({type(exc).__name__})") from exc
    if kind != fmt:
        raise DeidError(f"the written image is {kind}, expected {fmt}")
    if extra:
        raise DeidError(f"the written PNG still carries chunks {sorted(extra)}")
    if fmt == "JPEG" and strip_jpeg(data)[1]:
        raise DeidError("the written JPEG still carries metadata segments")
