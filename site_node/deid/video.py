"""Video de-identification: one H.264 stream out, no metadata or SEI, out-of-body frames blanked, overlays masked."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from protocols.errors import DeidError
from site_node.deid.mp4 import STRUCTURAL_KEYS, blank_handler_names, verify_clean_mp4
from site_node.deid.outofbody import OutOfBodyDetector, with_margin
from site_node.deid.overlay import (
    DeviceFacts,
    MaskPlan,
    RecorderRule,
    mask_yuv420,
    plan_masks,
)
from site_node.deid.profile import VideoSettings

Progress = Callable[[int], None]
# x264 writes its version and settings as SEI user data; recorders write text there too. Drop all SEI.
STRIP_SEI = "filter_units=remove_types=6"
_NATIVE = {"yuv420p", "yuvj420p"}


@dataclass
class VideoResult:
    """What was done to one video; `actions()` goes into the report."""

    frames: int = 0
    frames_blanked: int = 0
    regions_masked: int = 0
    streams_removed: int = 0
    metadata_removed: int = 0
    sei_packets_stripped: int = 0
    timestamps_repaired: int = 0
    reencoded: int = 0
    width: int = 0
    height: int = 0
    rate: Fraction = Fraction(25)

    def actions(self) -> dict[str, int]:
        out = {k: v for k, v in asdict(self).items() if isinstance(v, int) and k not in ("width", "height")}
        out["overlay_boxes_masked"] = out.pop("regions_masked")
        return out


def open_video(src: Path) -> av.container.InputContainer:
    try:
        return av.open(str(src), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise DeidError(
            f"not a readable video container: truncated, damaged or unsupported ({type(exc).__name__})"
        ) from exc


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams:
        raise DeidError("no readable streams: truncated or damaged container")
    for stream in container.streams.video:
        if not int(getattr(stream, "disposition", 0)) & 0x400:  # AV_DISPOSITION_ATTACHED_PIC: cover art
            return stream
    raise DeidError("no readable video stream: truncated or damaged file, or audio only")


def device_facts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> DeviceFacts:
    """Metadata as the recorder wrote it (read before it is dropped), for matching recorder rules."""
    meta = {
        **{k.lower(): v for k, v in container.metadata.items()},
        **{k.lower(): v for k, v in stream.metadata.items()},
    }
    maker = next((meta[k] for k in ("make", "manufacturer", "com.apple.quicktime.make") if k in meta), "")
    model = next((meta[k] for k in ("model", "com.apple.quicktime.model") if k in meta), "")
    ctx = stream.codec_context
    return DeviceFacts(width=ctx.width, height=ctx.height, manufacturer=maker, model=model, metadata=meta)


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    views = []
    for plane in frame.planes[:3]:
        buf = np.frombuffer(cast(Any, plane), np.uint8, count=plane.height * plane.line_size)
        views.append(buf.reshape(plane.height, plane.line_size)[:, : plane.width])
    return views[0], views[1], views[2]


def thumbnail(frame: av.VideoFrame, width: int) -> np.ndarray:
    """A small RGB image of a 4:2:0 frame, by subsampling the planes (no scaler, no full conversion)."""
    y, u, v = _planes(frame)
    step = max(2, (frame.width // max(width, 1)) & ~1)
    ys = y[::step, ::step].astype(np.float32)
    us = u[:: step // 2, :: step // 2][: ys.shape[0], : ys.shape[1]].astype(np.float32) - 128.0
    vs = v[:: step // 2, :: step // 2][: ys.shape[0], : ys.shape[1]].astype(np.float32) - 128.0
    ys = ys[: us.shape[0], : us.shape[1]]
    full = frame.format.name == "yuvj420p" or frame.color_range == 2
    luma = ys if full else (ys - 16.0) * 1.164
    rgb = np.stack([luma + 1.596 * vs, luma - 0.392 * us - 0.813 * vs, luma + 2.017 * us], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, threads: int
) -> Iterator[av.VideoFrame]:
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    try:
        for frame in container.decode(stream):
            yield frame if frame.format.name in _NATIVE else frame.reformat(format="yuv420p")
    except av.error.FFmpegError as exc:
        raise DeidError(f"the video stream could not be decoded ({type(exc).__name__})") from exc


def _check_complete(stream: av.video.stream.VideoStream, decoded: int) -> None:
    declared = stream.frames or 0
    if decoded == 0:
        raise DeidError("no frame could be decoded")
    if declared and decoded < declared:
        raise DeidError(f"truncated or damaged video: decoded {decoded} of {declared} frames")


def _classify(frames: Iterator[av.VideoFrame], detector: OutOfBodyDetector) -> Iterator[tuple[av.VideoFrame, bool]]:
    for frame in frames:
        yield frame, bool(detector.is_out_of_body(thumbnail(frame, detector.thumbnail_width)))


class _Encoder:
    """libx264 into MP4 with the input's time base; SEI stripped from every packet before muxing."""

    def __init__(
        self, dst: Path, src_stream: av.video.stream.VideoStream, rate: Fraction, settings: VideoSettings, pix_fmt: str
    ) -> None:
        self.out = av.open(str(dst), "w", format="mp4", container_options={"fflags": "+bitexact"})
        opts = {"preset": settings.preset, "crf": str(settings.crf)}
        self.stream = cast(av.video.stream.VideoStream, self.out.add_stream(settings.encoder, rate=rate, options=opts))
        self.stream.width, self.stream.height = src_stream.codec_context.width, src_stream.codec_context.height
        self.stream.pix_fmt = pix_fmt
        # The input's time base keeps every timestamp exact, so frame timing is preserved.
        time_base = src_stream.time_base or Fraction(1, 90000)
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base
        self.stream.codec_context.thread_count = settings.threads
        self.out.start_encoding()
        # The filter needs the opened encoder's parameters, so it is created after start_encoding.
        self.bsf = BitStreamFilterContext(STRIP_SEI, self.stream)
        self.shrunk = 0

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            size = packet.size
            out = self.bsf.filter(packet)
            self.shrunk += int(sum(p.size for p in out) < size)
            for p in out:
                p.stream = self.stream
                self.out.mux(p)

    def encode(self, frame: av.VideoFrame | None) -> None:
        self._mux(self.stream.encode(frame))

    def close(self) -> None:
        self.encode(None)
        for p in self.bsf.filter(None):
            p.stream = self.stream
            self.out.mux(p)
        self.out.close()


def _reencode(
    frames: Iterator[tuple[av.VideoFrame, bool]],
    dst: Path,
    stream: av.video.stream.VideoStream,
    plan: MaskPlan,
    settings: VideoSettings,
    result: VideoResult,
    progress: Progress | None,
) -> None:
    encoder: _Encoder | None = None
    last_pts = None
    step = max(1, round(1 / (result.rate * stream.time_base))) if stream.time_base else 1
    try:
        for index, (frame, blank) in enumerate(frames):
            if encoder is None:
                encoder = _Encoder(dst, stream, result.rate, settings, frame.format.name)
            if blank or plan:
                frame.make_writable()  # decoder buffers are shared with reference frames: copy before writing
                y, u, v = _planes(frame)
                limited = frame.format.name != "yuvj420p"
                if blank:
                    y[:] = 16 if limited else 0
                    u[:] = v[:] = 128
                    result.frames_blanked += 1
                else:
                    result.regions_masked += mask_yuv420((y, u, v), plan, limited)
            pts = frame.pts if frame.pts is not None else index * step
            if last_pts is not None and pts <= last_pts:
                pts, result.timestamps_repaired = last_pts + 1, result.timestamps_repaired + 1
            frame.pts, last_pts = pts, pts
            frame.pict_type = av.video.frame.PictureType.NONE  # the decoder's I/P/B choice must not steer x264
            encoder.encode(frame)
            result.frames += 1
            if progress:
                progress(1)
        if encoder is None:
            raise DeidError("no frame could be decoded")
        encoder.close()
        result.sei_packets_stripped += encoder.shrunk
        result.reencoded = 1
    except av.error.FFmpegError as exc:
        raise DeidError(f"the video could not be re-encoded ({type(exc).__name__})") from exc


def _copy(src: Path, dst: Path, result: VideoResult) -> None:
    """Stream copy of an H.264 stream that needs no pixel change: new container, SEI stripped."""
    with open_video(src) as container:
        stream = video_stream(container)
        with av.open(str(dst), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
            ostream = out.add_stream_from_template(stream)
            ostream.codec_tag = "avc1"  # AVI/MKV tags such as 'H264' are not valid in MP4
            for key in list(ostream.metadata):
                del ostream.metadata[key]
            bsf = BitStreamFilterContext(STRIP_SEI, stream, ostream)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None or packet.dts is None:
                    raise DeidError("the H.264 stream has packets without timestamps")
                size = packet.size
                filtered = bsf.filter(packet)
                result.sei_packets_stripped += int(sum(p.size for p in filtered) < size)
                for p in filtered:
                    p.stream = ostream
                    out.mux(p)
            for p in bsf.filter(None):
                p.stream = ostream
                out.mux(p)


def deidentify_video(
    src: Path,
    dst: Path,
    *,
    settings: VideoSettings,
    detector: OutOfBodyDetector,
    rules: tuple[RecorderRule, ...] = (),
    progress: Progress | None = None,
    fps_hint: Fraction | None = None,
    allow_copy: bool = True,
    extra_plan: MaskPlan | None = None,
) -> VideoResult:
    """De-identify one video file into an MP4 at `dst`; raises DeidError (the caller quarantines)."""
    result = VideoResult()
    with open_video(src) as container:
        stream = video_stream(container)
        plan = plan_masks(rules, device_facts(container, stream))
        if extra_plan:  # e.g. the DICOM header's device matched a rule the container metadata did not
            plan = MaskPlan(plan.boxes + extra_plan.boxes, plan.rules + extra_plan.rules)
        result.streams_removed = len(container.streams) - 1
        meta = [*container.metadata, *stream.metadata]
        result.metadata_removed = sum(1 for k in meta if k.lower() not in STRUCTURAL_KEYS)
        result.rate = Fraction(stream.average_rate or stream.guessed_rate or fps_hint or 25)
        result.width, result.height = stream.codec_context.width, stream.codec_context.height
        margin = math.ceil(settings.out_of_body_margin_s * float(result.rate))
        first_pass = allow_copy and not plan and stream.codec_context.name == "h264"
        if first_pass:
            flags = []
            for _, flag in _classify(_decoded(container, stream, settings.threads), detector):
                flags.append(flag)
                if progress:
                    progress(1)
            _check_complete(stream, len(flags))
            if not any(flags):
                try:
                    _copy(src, dst, result)
                    result.frames = len(flags)
                except (DeidError, av.error.FFmpegError, ValueError):
                    result.sei_packets_stripped = 0  # fall through to a full re-encode below
                else:
                    _finish(dst, result)
                    return result
    with open_video(src) as container:
        stream = video_stream(container)
        frames = with_margin(_classify(_decoded(container, stream, settings.threads), detector), margin)
        # After a classification pass the progress bar has already counted these frames.
        _reencode(frames, dst, stream, plan, settings, result, None if first_pass else progress)
        _check_complete(stream, result.frames)
    _finish(dst, result)
    return result


def _finish(dst: Path, result: VideoResult) -> None:
    blank_handler_names(dst)
    verify_clean_mp4(dst, result.frames)
