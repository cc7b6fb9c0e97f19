"""PyAV probing and frame sampling: indices in the file's own numbering, sizes, and errors that name the file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from protocols.errors import ConfigError, DataError
from site_node.video import frame_timeline, probe_video, read_frames, sample_frames

N_FRAMES, FPS, SIZE = 40, 10, (160, 120)


def _level(index: int) -> int:
    return 20 + 5 * index  # each frame's grey level encodes its index (distinct after H.264)


def _write_counter(path: Path) -> Path:
    """An H.264 video whose frame i is uniformly grey at _level(i)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "10"})
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(N_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE[1], SIZE[0], 3), _level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_counter(tmp_path_factory.mktemp("video") / "counter.mp4")


def test_probe_reports_fps_count_and_size(counter_video: Path) -> None:
    info = probe_video(counter_video)
    assert (info.fps, info.n_frames, info.width, info.height) == (FPS, N_FRAMES, *SIZE)
    assert info.path == counter_video


def test_probe_counts_frames_where_the_container_does_not(tmp_path: Path) -> None:
    path = _write_counter(tmp_path / "counter.mkv")  # Matroska stores no frame count
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert probe_video(path).n_frames == N_FRAMES
    assert [i for i, _ in sample_frames(path, 13)] == [0, 13, 26, 39]


@pytest.mark.parametrize("every_n", [1, 3, 7, 40, 100])
def test_sample_frames_yields_every_nth_frame_by_count(counter_video: Path, every_n: int) -> None:
    frames = list(sample_frames(counter_video, every_n))
    assert [i for i, _ in frames] == list(range(0, N_FRAMES, every_n))
    for index, image in frames:
        assert image.mode == "RGB" and image.size == SIZE
        # the content is that frame's, so the index is not merely counted but right
        assert abs(float(np.asarray(image).mean()) - _level(index)) < 2.5


def test_max_side_downscales_keeping_aspect(counter_video: Path) -> None:
    ((_, small),) = list(sample_frames(counter_video, 100, max_side=80))
    assert small.size == (80, 60)
    ((_, same),) = list(sample_frames(counter_video, 100, max_side=1000))
    assert same.size == SIZE


@pytest.mark.parametrize("every_n", [0, -2, 1.5])
def test_bad_every_n_is_a_config_error(counter_video: Path, every_n: int) -> None:
    with pytest.raises(ConfigError, match="every_n"):
        next(sample_frames(counter_video, every_n))


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, "truncated"])
def test_unreadable_video_is_a_data_error_naming_the_file(
    tmp_path: Path, counter_video: Path, content: bytes | str
) -> None:
    bad = tmp_path / "broken-case.mp4"
    if content == "truncated":  # the MP4 index (moov) sits at the end: cut it off
        data = counter_video.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    with pytest.raises(DataError, match="broken-case.mp4"):
        probe_video(bad)
    with pytest.raises(DataError, match="broken-case.mp4"):
        list(sample_frames(bad, 1))


def test_missing_video_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.mp4"):
        probe_video(tmp_path / "nowhere.mp4")


def _gop_video(path: Path, keyint: int, n: int = 120) -> Path:
    """Like the counter video, with a keyframe every `keyint` frames and B-frames (pts out of decode order)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=FPS, options={"crf": "10", "x264-params": f"keyint={keyint}:min-keyint={keyint}:bframes=2"}
        )
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            level = 20 + (2 * i) % 220
            frame = av.VideoFrame.from_ndarray(np.full((SIZE[1], SIZE[0], 3), level, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("wanted", "seeks"),
    [
        ([0, 35, 70, 119], True),  # sparser than the 10-frame GOP: seek to the keyframe before each
        ([3, 4, 5, 9], False),  # inside one GOP: decode straight through
        ([50, 5, 50], True),  # unsorted, repeated
    ],
)
def test_read_frames_seeks_to_keyframes_and_returns_the_decoded_frames(
    tmp_path: Path, wanted: list[int], seeks: bool
) -> None:
    path = _gop_video(tmp_path / "gop.mp4", keyint=10)
    timeline = frame_timeline(path)
    assert timeline is not None and timeline[1][:3] == [0, 10, 20]
    decoded: list[int] = []
    got = list(read_frames(path, wanted, decoded=decoded))
    want = {i: im for i, im in sample_frames(path, 1) if i in set(wanted)}
    assert [i for i, _ in got] == sorted(set(wanted))
    assert all(np.array_equal(np.asarray(im), np.asarray(want[i])) for i, im in got)
    assert (len(decoded) < max(wanted) + 1) is seeks  # seeking decodes fewer frames than the straight read


def test_read_frames_falls_back_where_timestamps_do_not_count_frames(tmp_path: Path) -> None:
    """Irregular pts (a recorder's gaps) still give frames by count, identical to sample_frames."""
    path = tmp_path / "gaps.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"x264-params": "keyint=5:min-keyint=5"})
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE[1], SIZE[0], 3), 20 + 7 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 2 + (i > 12) * 5, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    want = {i: im for i, im in sample_frames(path, 1) if i in (2, 17, 29)}
    got = dict(read_frames(path, [29, 2, 17]))
    assert sorted(got) == [2, 17, 29]
    assert all(np.array_equal(np.asarray(got[i]), np.asarray(want[i])) for i in got)
