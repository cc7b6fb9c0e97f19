"""JPEG/PNG frames: EXIF and text chunks stripped, names pseudonymised, out-of-body frames blanked, overlays masked."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from deid_fixtures import (
    find_needles,
    in_body,
    jpeg_with_exif,
    out_of_body,
    png_with_text,
)
from PIL import Image

from site_node.deid.images import strip_jpeg
from site_node.deid.runner import deidentify_paths

WHO = "DOE JOHNATHAN"


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> dict:
    src = tmp_path_factory.mktemp("frames-in") / "DOE_JOHNATHAN_1961-03-04"
    src.mkdir()
    for i in range(6):
        rgb = out_of_body(i) if i == 3 else in_body(i)
        jpeg_with_exif(src / f"DOE_JOHNATHAN_{i + 1:04d}.jpg", rgb, WHO)
    png_dir = src.parent / "pngs"
    png_dir.mkdir()
    for i in range(3):
        png_with_text(png_dir / f"{i:06d}.png", in_body(i), WHO)
    (png_dir / "000003.png").write_bytes((png_dir / "000000.png").read_bytes()[:300])  # truncated frame
    out = tmp_path_factory.mktemp("frames-out")
    report = deidentify_paths([src, png_dir], out, key, progress=False)
    return {"src": src, "png": png_dir, "out": out, "report": report}


def test_no_identifier_survives_in_bytes_or_names(frames_run: dict) -> None:
    assert find_needles(frames_run["out"], [WHO, "JOHNATHAN", "DOE_", "1961-03-04", "EndoCam"]) == []


def test_jpeg_frames_lose_exif_and_comments_and_keep_order(frames_run: dict) -> None:
    jpgs = sorted(frames_run["out"].rglob("*.jpg"))
    assert [p.name for p in jpgs] == [f"{i:06d}.jpg" for i in range(6)]
    for p in jpgs:
        with Image.open(p) as img:
            assert len(img.getexif()) == 0 and "comment" not in img.info and "exif" not in img.info
        assert strip_jpeg(p.read_bytes())[1] == 0


def test_out_of_body_frame_and_its_margin_are_blanked(frames_run: dict) -> None:
    jpgs = sorted(frames_run["out"].rglob("*.jpg"))
    blank = [float(np.asarray(Image.open(p)).max()) < 40 for p in jpgs]
    assert blank == [False, False, True, True, True, False]


def test_pixels_of_untouched_jpeg_frames_are_bit_identical(frames_run: dict) -> None:
    src = sorted(frames_run["src"].glob("*.jpg"))[0]
    out = sorted(frames_run["out"].rglob("*.jpg"))[0]
    a, b = np.asarray(Image.open(src)), np.asarray(Image.open(io.BytesIO(out.read_bytes())))
    assert np.array_equal(a, b)


def test_png_text_chunks_removed_numeric_names_kept_truncated_quarantined(frames_run: dict) -> None:
    pngs = sorted(frames_run["out"].rglob("*.png"))
    assert [p.name for p in pngs] == ["000000.png", "000001.png", "000002.png"]
    for p in pngs:
        with Image.open(p) as img:
            assert not set(img.info) - {"dpi", "gamma", "srgb"}
    bad = [e for e in frames_run["report"].entries if e.status == "quarantined"]
    assert len(bad) == 1 and "truncated" in bad[0].reason
    assert len(frames_run["report"].entries) == 10


def test_strip_jpeg_refuses_truncated_data() -> None:
    buf = io.BytesIO()
    Image.fromarray(in_body(0)).save(buf, format="JPEG")
    with pytest.raises(Exception, match="truncated"):
        strip_jpeg(buf.getvalue()[:-200])


def test_frame_with_recorder_overlay_is_masked(tmp_path: Path, key: bytes, site_profile: Path) -> None:
    img = Image.fromarray(in_body(0))
    exif = Image.Exif()
    exif[0x0110] = "ORREC-5000"
    img.save(tmp_path / "000000.jpg", exif=exif.tobytes())
    entry = deidentify_paths(
        [tmp_path / "000000.jpg"], tmp_path / "out", key, str(site_profile), progress=False
    ).entries[0]
    assert entry.status == "ok" and entry.actions["overlay_boxes_masked"] == 1
    out = np.asarray(Image.open(tmp_path / "out" / entry.output))
    assert float(out[:30, :80].max()) < 40 and float(out[40:, 80:].max()) > 100
