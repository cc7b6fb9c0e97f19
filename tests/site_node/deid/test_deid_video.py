"""Video de-identification on real files: containers, streams, metadata, SEI, out-of-body, overlays, DICOM video."""

from __future__ import annotations

from pathlib import Path

import av
import pydicom
import pytest
from deid_fixtures import (
    decode_frames,
    find_needles,
    frames_for,
    is_blank,
    make_video,
    video_dicom,
)
from pydicom.encaps import generate_frames

from site_node.deid.keys import pseudonym
from site_node.deid.mp4 import SEI, STRUCTURAL_KEYS, nal_types_avcc, user_data_items
from site_node.deid.outofbody import blank_mask
from site_node.deid.runner import deidentify_paths

NEEDLES = [
    "DOE JOHNATHAN",
    "JOHNATHAN",
    "MRN-4711-XYZ",
    "2024-03-05",
    "+47.3769",
    "DOEHANDLER",
    "x264",
    "Lavf",
    "Saint Examplia",
    "SN-778899",
    "19610304",
    "20240305",
    "ACC-99881",
    "GREGORY",
    "RATCHED",
    "ORREC",
]
CONTAINERS = {
    "clip.mp4": dict(
        fmt="mp4",
        metadata={
            "title": "PATIENT DOE JOHNATHAN",
            "comment": "MRN-4711-XYZ",
            "creation_time": "2024-03-05T10:11:12Z",
            "location": "+47.3769+008.5417/",
        },
        stream_metadata={"handler_name": "DOEHANDLER"},
        audio=True,
        sei_text="DOE JOHNATHAN SEI",
    ),
    "clip.mkv": dict(
        fmt="matroska", metadata={"title": "DOE JOHNATHAN"}, subtitle="Patient: DOE JOHNATHAN, MRN-4711-XYZ"
    ),
    "clip.mov": dict(fmt="mov", stream_metadata={"timecode": "10:11:12:13"}, metadata={"comment": "MRN-4711-XYZ"}),
    "clip.avi": dict(fmt="avi", codec="mpeg4", metadata={"title": "DOE JOHNATHAN"}),
    "clip.ts": dict(
        fmt="mpegts",
        codec="mpeg2video",
        metadata={"service_name": "DOE JOHNATHAN", "service_provider": "Saint Examplia"},
    ),
}
N = 40


def _entry(report, key: bytes, path: Path):
    pid = pseudonym(key, "input", str(path.resolve()))
    return next(e for e in report.entries if e.pseudo_id == pid)


def _assert_clean_mp4(path: Path, frames: int) -> None:
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video"] and c.streams.video[0].codec_context.name == "h264"
        assert set(c.metadata) <= STRUCTURAL_KEYS and not c.streams.video[0].metadata.get("handler_name")
        packets = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    assert len(packets) == frames and all(SEI not in nal_types_avcc(p) for p in packets)
    assert user_data_items(path) == []


@pytest.fixture(scope="module")
def container_run(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> dict:
    src = tmp_path_factory.mktemp("video-in")
    for name, opts in CONTAINERS.items():
        make_video(src / name, frames_for(N), **opts)
    clip = (src / "clip.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(clip[: len(clip) // 2])
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.docx").write_bytes(b"PK\x03\x04 not really a document")
    out = tmp_path_factory.mktemp("video-out")
    return {"src": src, "out": out, "report": deidentify_paths([src], out, key, "demo", progress=False)}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_container_comes_out_as_one_clean_h264_stream(container_run: dict, key: bytes, name: str) -> None:
    src = container_run["src"] / name
    entry = _entry(container_run["report"], key, src)
    assert entry.status == "ok", entry.reason
    out = container_run["out"] / entry.output
    _assert_clean_mp4(out, N)
    (before, t_in), (after, t_out) = decode_frames(src), decode_frames(out)
    assert len(after) == len(before) == N
    assert [round(t - t_in[0], 6) for t in t_in] == [round(t - t_out[0], 6) for t in t_out]
    assert entry.actions["streams_removed"] == (1 if name in ("clip.mp4", "clip.mkv", "clip.mov") else 0)
    assert find_needles(container_run["out"], NEEDLES) == []


def test_h264_without_pixel_change_is_stream_copied(container_run: dict, key: bytes) -> None:
    entry = _entry(container_run["report"], key, container_run["src"] / "clip.mp4")
    assert entry.actions["reencoded"] == 0 and entry.actions["sei_packets_stripped"] > 0


@pytest.mark.parametrize(
    ("name", "reason"), [("cut.mp4", "truncated"), ("empty.mp4", "zero-length"), ("notes.docx", "unknown")]
)
def test_damaged_and_unknown_files_are_quarantined(container_run: dict, key: bytes, name: str, reason: str) -> None:
    entry = _entry(container_run["report"], key, container_run["src"] / name)
    assert entry.status == "quarantined" and reason in entry.reason
    assert not any(p.name.startswith(".deid-staging") for p in container_run["out"].iterdir())


def test_out_of_body_segments_are_blanked_with_margin(tmp_path: Path, key: bytes) -> None:
    spans, n = [(30, 43), (70, 145)], 150  # 0.52 s starting between keyframes (gop 12), and 3 s
    src = make_video(tmp_path / "lap.mp4", frames_for(n, spans), gop=12)
    report = deidentify_paths([src], tmp_path / "out", key, "demo", progress=False)
    entry = report.entries[0]
    frames, _ = decode_frames(tmp_path / "out" / entry.output)
    expected = blank_mask([any(a <= i < b for a, b in spans) for i in range(n)], 13)  # 0.5 s at 25 fps
    assert [is_blank(f) for f in frames] == expected
    assert entry.actions["frames_blanked"] == sum(expected) and entry.actions["reencoded"] == 1


def test_burned_in_overlay_masked_and_out_of_body_blanked_in_one_pass(
    tmp_path: Path, key: bytes, site_profile: Path
) -> None:
    n = 60
    src = make_video(
        tmp_path / "or.mkv",
        frames_for(n, [(20, 30)], overlay="DOE JOHNATHAN"),
        fmt="matroska",
        metadata={"model": "ORREC-5000"},
    )
    entry = deidentify_paths([src], tmp_path / "out", key, str(site_profile), progress=False).entries[0]
    frames, _ = decode_frames(tmp_path / "out" / entry.output)
    blank = blank_mask([20 <= i < 30 for i in range(n)], 13)
    assert [is_blank(f) for f in frames] == blank
    assert all(float(f[:30, :80].max()) < 40 for f in frames)  # the recorder's text box, on every frame
    assert entry.actions["overlay_boxes_masked"] == n - sum(blank)
    assert find_needles(tmp_path / "out", NEEDLES) == []


def test_recorder_with_known_overlay_and_no_mask_is_quarantined(tmp_path: Path, key: bytes, site_profile: Path) -> None:
    src = make_video(tmp_path / "bad.mkv", frames_for(10), fmt="matroska", metadata={"model": "BADREC-1"})
    entry = deidentify_paths([src], tmp_path / "out", key, str(site_profile), progress=False).entries[0]
    assert entry.status == "quarantined" and "no mask regions" in entry.reason


@pytest.fixture(scope="module")
def dicom_video_run(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> dict:
    src = tmp_path_factory.mktemp("dcmvideo-in")
    mp4 = make_video(src.parent / "embedded.mp4", frames_for(50, [(20, 26)]), **CONTAINERS["clip.mp4"])
    dcm = video_dicom(src / "video.dcm", mp4.read_bytes(), frames=50)
    (src / "video_cut.dcm").write_bytes(dcm.read_bytes()[: dcm.stat().st_size * 2 // 3])
    out = tmp_path_factory.mktemp("dcmvideo-out")
    return {"src": src, "out": out, "report": deidentify_paths([src], out, key, "demo", progress=False)}


def test_dicom_video_stream_is_extracted_cleaned_and_reencapsulated(
    dicom_video_run: dict, key: bytes, tmp_path: Path
) -> None:
    entry = _entry(dicom_video_run["report"], key, dicom_video_run["src"] / "video.dcm")
    assert entry.status == "ok", entry.reason
    ds = pydicom.dcmread(dicom_video_run["out"] / entry.output)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.MPEG4HP41 and ds.NumberOfFrames == 50
    assert ds.LossyImageCompression == "01" and ds.PatientIdentityRemoved == "YES" and ds.PatientName == ""
    stream = tmp_path / "stream.mp4"
    stream.write_bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))
    _assert_clean_mp4(stream, 50)
    frames, _ = decode_frames(stream)
    assert [is_blank(f) for f in frames] == blank_mask([20 <= i < 26 for i in range(50)], 13)
    assert ds.StudyDescription == "Lap chole"
    assert find_needles(dicom_video_run["out"], NEEDLES + ["DOE^JOHNATHAN", "HOUSE^GREGORY"]) == []


def test_truncated_dicom_video_is_quarantined(dicom_video_run: dict, key: bytes) -> None:
    entry = _entry(dicom_video_run["report"], key, dicom_video_run["src"] / "video_cut.dcm")
    assert entry.status == "quarantined" and entry.output is None
