"""Video probing and frame sampling with PyAV, in each file's own frame numbering."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image

from protocols.errors import ConfigError, DataError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    n_frames: int
    width: int
    height: int


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(f"video {path} does not exist or is not a file")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"video {path} cannot be read: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"video {path} has no video stream")
    return container


def probe_video(path: Path) -> VideoInfo:
    """Frame rate, frame count and size of a video; DataError naming the file if it cannot be read."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        n_frames = stream.frames
        try:
            if n_frames <= 0:
                # Containers without a frame count (MKV, some AVI): count packets, which is cheap (no decoding).
                n_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.error.FFmpegError as exc:
            raise DataError(f"video {path} cannot be demuxed: {exc}") from exc
        width, height = stream.codec_context.width, stream.codec_context.height
    if not rate or n_frames <= 0 or width <= 0 or height <= 0:
        raise DataError(f"video {path} has no usable frames (fps={rate}, frames={n_frames}, size={width}x{height})")
    return VideoInfo(path=path, fps=float(rate), n_frames=int(n_frames), width=int(width), height=int(height))


def _scaled(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """Target size keeping the aspect ratio when the longer side exceeds max_side, else None."""
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


def sample_frames(path: Path, every_n: int, max_side: int | None = None) -> Iterator[tuple[int, Image.Image]]:
    """Yield (frame_index, RGB image) for frames 0, every_n, 2*every_n, ... counting decoded frames.

    Frame indices are counted, not derived from timestamps, so they match per-frame label files even
    when a recorder wrote irregular pts.
    """
    if not isinstance(every_n, int) or every_n < 1:
        raise ConfigError(f"every_n must be a positive integer, got {every_n!r}")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 2):
        raise ConfigError(f"max_side must be an integer >= 2 or None, got {max_side!r}")
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                if index % every_n == 0:
                    size = _scaled(frame.width, frame.height, max_side)
                    if size is None:
                        yield index, frame.to_image()
                    else:
                        yield index, frame.to_image(width=size[0], height=size[1], interpolation="AREA")
                index += 1
        except av.error.FFmpegError as exc:
            raise DataError(f"video {path} failed to decode after frame {index}: {exc}") from exc
    if index == 0:
        raise DataError(f"video {path} decoded to no frames")


def _frame_image(frame: av.VideoFrame, max_side: int | None) -> Image.Image:
    size = _scaled(frame.width, frame.height, max_side)
    if size is None:
        return frame.to_image()
    return frame.to_image(width=size[0], height=size[1], interpolation="AREA")


def frame_timeline(path: Path) -> tuple[list[int], list[int]] | None:
    """Presentation timestamps of every frame in order and the indices of the keyframes, read from the packets
    (no decoding); None when timestamps are missing or repeated (then only decoding from the start is safe)."""
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        try:
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]
        except av.error.FFmpegError as exc:
            raise DataError(f"video {path} cannot be demuxed: {exc}") from exc
    pts = sorted(p for p, _ in packets if p is not None)
    if len(pts) != len(packets) or len(set(pts)) != len(pts):
        return None
    rank = {p: i for i, p in enumerate(pts)}
    return pts, sorted(rank[p] for p, key in packets if key and p is not None)


class _Unseekable(Exception):
    """A decoded frame's timestamp is not the one its index predicts: fall back to decoding from the start."""


def _seeking(
    path: Path, wanted: list[int], timeline: tuple[list[int], list[int]], max_side: int | None, decoded: list[int]
) -> Iterator[tuple[int, Image.Image]]:
    pts, keys = timeline
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames: Iterator[av.VideoFrame] | None = None
        index = -1  # index of the frame `frames` yields next
        for target in wanted:
            key = max((k for k in keys if k <= target), default=0)
            if frames is None or key > index:  # the keyframe is ahead: seeking skips decoding
                container.seek(pts[key], stream=stream, backward=True, any_frame=False)
                frames, index = container.decode(stream), key
            while index <= target:
                frame = next(frames, None)
                decoded.append(index)
                if frame is None or frame.pts != pts[index]:
                    raise _Unseekable
                if index == target:
                    yield index, _frame_image(frame, max_side)
                index += 1


def read_frames(
    path: Path, indices: list[int], max_side: int | None = None, decoded: list[int] | None = None
) -> Iterator[tuple[int, Image.Image]]:
    """(index, RGB image) for the wanted frame indices (counted as in sample_frames), in increasing order.

    When a wanted frame lies beyond the next keyframe, the reader seeks to the keyframe before it instead of
    decoding everything between (sampling sparser than the GOP); every decoded frame's timestamp is checked
    against the index it should have, and any mismatch falls back to decoding from the start. `decoded`, when
    given, receives the index of every frame the seeking reader decoded.
    """
    path = Path(path)
    wanted = sorted(set(indices))
    if not wanted:
        return
    timeline = frame_timeline(path)
    done = -1
    if timeline is not None and wanted[-1] < len(timeline[0]):
        try:
            for index, image in _seeking(path, wanted, timeline, max_side, [] if decoded is None else decoded):
                done = index
                yield index, image
            return
        except (_Unseekable, av.error.FFmpegError):
            pass
    rest = set(w for w in wanted if w > done)
    every = math.gcd(*rest) if len(rest) > 1 else 1
    for index, image in sample_frames(path, max(1, every), max_side):
        if index in rest:
            yield index, image
        if index >= wanted[-1]:
            return
