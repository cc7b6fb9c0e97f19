"""MP4 and H.264 bitstream checks: box walking (handler names), NAL unit types, output verification."""

from __future__ import annotations

import struct
from pathlib import Path

import av

from protocols.errors import DeidError

_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"udta", b"edts", b"meta", b"mvex", b"ilst"}
Box = tuple[bytes, int, int, bytes]  # type, payload start, end, parent type
# Keys FFmpeg derives from the file structure itself (brands, track language), not from user metadata.
STRUCTURAL_KEYS = {"major_brand", "minor_version", "compatible_brands", "language", "vendor_id", "handler_name"}
SEI = 6


def _boxes(f, start: int, end: int, found: list[Box], parent: bytes = b"") -> None:
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise DeidError(f"MP4 box {kind!r} at offset {pos} is malformed")
        found.append((kind, pos + header, pos + size, parent))
        if kind in _CONTAINER_BOXES:
            # A 'meta' box is a full box: 4 bytes of version and flags precede its children.
            _boxes(f, pos + header + (4 if kind == b"meta" else 0), pos + size, found, kind)
        pos += size


def list_boxes(path: Path) -> list[Box]:
    """(type, payload start, end, parent type) of every box in the file's tree (media data is skipped)."""
    found: list[Box] = []
    with open(path, "rb") as f:
        f.seek(0, 2)
        _boxes(f, 0, f.tell(), found)
    return found


def blank_handler_names(path: Path) -> int:
    """Zero the name field of every 'hdlr' box (FFmpeg writes 'VideoHandler'); sizes stay the same."""
    count = 0
    with open(path, "r+b") as f:
        f.seek(0, 2)
        found: list[Box] = []
        _boxes(f, 0, f.tell(), found)
        for kind, start, end, _ in found:
            # hdlr payload: version/flags 4, pre_defined 4, handler_type 4, reserved 12, then the name.
            name_at = start + 24
            if kind == b"hdlr" and end > name_at:
                f.seek(name_at)
                if f.read(end - name_at).strip(b"\x00"):
                    f.seek(name_at)
                    f.write(b"\x00" * (end - name_at))
                    count += 1
    return count


def user_data_items(path: Path) -> list[bytes]:
    """Box types that carry user metadata (udta entries, iTunes-style ilst items); FFmpeg leaves an empty shell."""
    items = []
    for kind, _, _, parent in list_boxes(path):
        if (
            parent == b"ilst"
            or (parent == b"udta" and kind != b"meta")
            or (parent == b"meta" and kind not in (b"hdlr", b"ilst"))
        ):
            items.append(kind)
    return items


def nal_types_avcc(data: bytes, length_size: int = 4) -> list[int]:
    """NAL unit types in one length-prefixed (MP4 'avcC') H.264 access unit."""
    types, pos = [], 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > len(data):
            raise DeidError("H.264 access unit has a malformed NAL length")
        types.append(data[pos] & 0x1F)
        pos += n
    return types


def nal_types_annexb(data: bytes) -> list[int]:
    """NAL unit types in an Annex B (start-code) H.264 byte stream."""
    types, pos = [], data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        types.append(data[pos + 3] & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def verify_clean_mp4(path: Path, expected_frames: int) -> None:
    """Fail closed unless the file is one H.264 stream, no user metadata, no SEI, and every frame is there."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise DeidError(f"the written video cannot be re-read ({type(exc).__name__})") from exc
    with container:
        streams = list(container.streams)
        if len(streams) != 1 or streams[0].type != "video" or streams[0].codec_context.name != "h264":
            raise DeidError(
                f"the written video has streams {[s.type for s in streams]}, expected one H.264 video stream"
            )
        stream = streams[0]
        leftover = sorted(set(container.metadata) - STRUCTURAL_KEYS) + sorted(set(stream.metadata) - STRUCTURAL_KEYS)
        if leftover or stream.metadata.get("handler_name") or stream.metadata.get("vendor_id", "").strip("\x00 0[]"):
            raise DeidError(f"the written video still carries metadata tags {leftover or ['handler_name/vendor_id']}")
        extradata = stream.codec_context.extradata or b""
        length_size = (extradata[4] & 0x03) + 1 if len(extradata) > 4 and extradata[0] == 1 else 4
        packets = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            if SEI in nal_types_avcc(bytes(packet), length_size):
                raise DeidError("the written video still carries SEI NAL units")
    items = user_data_items(path)
    if items:
        raise DeidError(f"the written video still carries user data boxes {items[:5]}")
    if packets != expected_frames:
        raise DeidError(f"the written video has {packets} frames, expected {expected_frames}")
