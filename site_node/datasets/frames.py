"""Where a labelled frame's pixels are: checking that every labelled frame has them, and reading them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from protocols.errors import DataError
from site_node.datasets.common import frame_folder, line_of
from site_node.store import FrameLabels


def frame_line(source: Path, frame: int) -> int:
    """The line of a label file that holds a frame (CholecT50 key, Cholec80 row, CSV row), for error messages."""
    try:
        text = Path(source).read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return 1
    for needle in (f'"{frame}"', f"\n{frame}\t", f",{frame},", f",{frame}\n", f"_{frame}."):
        if needle in text:
            return line_of(text, needle) + int(needle.startswith("\n"))  # the match begins on the line before
    return 1


def check_frames(
    fl: FrameLabels, media: Path | None, source: Path, *, fps: float | None = None, n_frames: int | None = None
) -> None:
    """DataError naming the label file, line and frame when a labelled frame has no pixels (beyond the video)."""
    from site_node.video import probe_video

    if fl.images:
        bad = [f for f in sorted(fl.labels) if f not in fl.images or not fl.images[f].is_file()]
        what = "has no image file"
    elif media is not None and media.is_dir():
        files = frame_folder(media)
        bad, what = [f for f in sorted(fl.labels) if f not in files], f"has no image in {media.name}/"
    elif media is not None and media.is_file():
        if fps is None or n_frames is None:
            info = probe_video(media)
            fps, n_frames = info.fps, info.n_frames
        bad = [f for f in sorted(fl.labels) if not 0 <= fl.video_frame(f, fps) < n_frames]
        what = f"is beyond the video's {n_frames} frames"
    else:
        return  # labels alone: scoring a predictions file without the videos
    if bad:
        raise DataError(f"{source}:{frame_line(source, bad[0])}: frame {bad[0]} {what}")


def iter_frames(media: Path, fl: FrameLabels, frames: list[int], video_fps: float) -> Iterator[tuple[int, Image.Image]]:
    """(label frame, RGB image) for the wanted label frames, from images, a frame folder or a video file."""
    from site_node.video import read_frames

    if fl.images or media.is_dir():
        files = fl.images or frame_folder(media)
        for f in frames:
            if f not in files:
                raise DataError(f"{media}: no image for frame {f}")
            try:
                with Image.open(files[f]) as im:
                    yield f, im.convert("RGB")
            except OSError as exc:
                raise DataError(f"{files[f]}: cannot read frame image: {exc}") from exc
        return
    wanted: dict[int, list[int]] = {}
    for f in frames:
        wanted.setdefault(fl.video_frame(f, video_fps), []).append(f)
    if not wanted:
        return
    # Seeks to keyframes when the wanted frames are further apart than the GOP; decodes straight through otherwise.
    for index, image in read_frames(media, sorted(wanted)):
        for f in wanted.get(index, ()):
            yield f, image
