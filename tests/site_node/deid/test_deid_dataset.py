"""Dataset-aware ingest: media and labels renamed together, references rewritten, the map kept out of the output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from deid_fixtures import find_needles, frames_for, in_body, make_video
from PIL import Image

from protocols.errors import UsageError
from site_node.datasets.registry import FORMATS
from site_node.deid.dataset import deidentify_dataset
from site_node.deid.layouts import LAYOUTS

PHI_CASE = "DOE_JOHNATHAN_1961"
PHASES = "Frame\tPhase\n0\tPreparation\n25\tCalotTriangleDissection\n"
TOOLS = "Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag\n0\t1\t0\t0\t0\t0\t0\t0\n"


def _reid(path: Path) -> dict[str, str]:
    return {k: v["original"] for k, v in json.loads(path.read_text())["entries"].items()}


def test_cholec80_names_and_labels_renamed_together(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "cholec80"
    for sub in ("videos", "phase_annotations", "tool_annotations"):
        (src / sub).mkdir(parents=True)
    for case in (PHI_CASE, "video02"):
        make_video(src / "videos" / f"{case}.mp4", frames_for(30))
        (src / "phase_annotations" / f"{case}-phase.txt").write_text(PHASES)
        (src / "tool_annotations" / f"{case}-tool.txt").write_text(TOOLS)
    (src / "phase_annotations" / "video02-phase.txt").write_text(PHASES + "# Patient: Doe, born 04.03.1961\n")
    (src / "videos" / "notes.docx").write_bytes(b"PK\x03\x04 hospital notes")
    dest, reid = tmp_path / "store", tmp_path / "home" / "reid.json"
    report = deidentify_dataset(src, "cholec80", dest, key, reid_map=reid, progress=False, profile="demo")
    mapping = _reid(reid)
    pseudo = next(p for p, o in mapping.items() if o == PHI_CASE)
    assert (dest / "videos" / f"{pseudo}.mp4").is_file()
    assert (dest / "phase_annotations" / f"{pseudo}-phase.txt").read_text() == PHASES
    assert (dest / "tool_annotations" / f"{pseudo}-tool.txt").read_text() == TOOLS
    bad = sorted(e.reason for e in report.entries if e.status == "quarantined")
    # A line off the Frame<TAB>Phase structure quarantines the file (before any pattern would look at it).
    assert len(bad) == 2 and any("expected a frame and a phase" in r for r in bad)
    assert any("not part of the cholec80 layout" in r for r in bad)
    assert find_needles(dest, [PHI_CASE, "DOE_JOHNATHAN", "Doe, born", "notes"]) == []
    assert not list(dest.rglob("reid*")) and (dest / "deid-report.json").is_file()


def test_cholect50_frame_folders_keep_frame_numbers_and_json_refs_rewritten(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "cholect50"
    (src / "videos" / "VID01").mkdir(parents=True)
    (src / "labels").mkdir()
    for i in range(3):
        Image.fromarray(in_body(i)).save(src / "videos" / "VID01" / f"{i:06d}.png")
    label = {
        "video": "VID01",
        "fps": 1,
        "categories": {"phase": {"0": "preparation"}},
        "annotations": {"0": [[1, 0, 1, 0.1, 0.1, 0.2, 0.2, 2, 3, 1, 0.3, 0.3, 0.1, 0.1, 0]]},
    }
    (src / "labels" / "VID01.json").write_text(json.dumps(label))
    dest, reid = tmp_path / "store", tmp_path / "reid.json"
    report = deidentify_dataset(src, "cholect50", dest, key, reid_map=reid, progress=False, profile="demo")
    assert report.n_quarantined() == 0
    pseudo = next(p for p, o in _reid(reid).items() if o == "VID01")
    assert sorted(p.name for p in (dest / "videos" / pseudo).iterdir()) == ["000000.png", "000001.png", "000002.png"]
    out = json.loads((dest / "labels" / f"{pseudo}.json").read_text())
    assert "video" not in out and out["annotations"] == label["annotations"]  # off the allow-list: dropped
    assert find_needles(dest, ["VID01"]) == []


def test_coco_file_names_rewritten_and_images_where_json_says(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "endoscapes"
    (src / "train").mkdir(parents=True)
    names = ["1234567_100.jpg", "1234567_125.jpg", "DOE_JOHNATHAN.jpg"]
    for i, name in enumerate(names):
        Image.fromarray(in_body(i)).save(src / "train" / name)
    coco = {
        "info": {
            "description": "CVS export",
            "contributor": "Dr. Smithers",
            "date_created": "2023/05/01",
            "version": "1.0",
        },
        "images": [
            {"id": i + 1, "file_name": n, "video_id": 1234567, "width": 160, "height": 120} for i, n in enumerate(names)
        ],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 1}],
        "categories": [{"id": 1, "name": "cystic_artery"}],
    }
    (src / "train" / "annotation_coco.json").write_text(json.dumps(coco))
    dest, reid = tmp_path / "store", tmp_path / "reid.json"
    report = deidentify_dataset(src, "endoscapes", dest, key, reid_map=reid, progress=False, profile="demo")
    assert report.n_quarantined() == 0, [e.reason for e in report.entries]
    out = json.loads((dest / "train" / "annotation_coco.json").read_text())
    for image in out["images"]:
        assert (dest / "train" / image["file_name"]).is_file() and image["video_id"] == 1
    assert out["images"][0]["file_name"].endswith("_100.jpg") and out["annotations"] == coco["annotations"]
    assert find_needles(dest, ["1234567", "DOE_JOHNATHAN", "Smithers", "2023/05/01"]) == []


def test_csv_video_column_rewritten_and_phi_cells_quarantine_the_file(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "csvset"
    src.mkdir()
    make_video(src / f"{PHI_CASE}.mp4", frames_for(20))
    (src / "labels.csv").write_text(
        f"video,frame,phase\n{PHI_CASE}.mp4,0,Preparation\n{PHI_CASE}.mp4,25,ClippingCutting\n"
    )
    (src / "extra.csv").write_text("video,comment\nx.mp4,call 555-123-4567\n")
    dest, reid = tmp_path / "store", tmp_path / "reid.json"
    report = deidentify_dataset(src, "csv", dest, key, reid_map=reid, progress=False, profile="demo")
    pseudo = next(p for p, o in _reid(reid).items() if o == PHI_CASE)
    labels = [p for p in dest.glob("*.csv")]
    assert len(labels) == 1
    rows = list(csv.DictReader(labels[0].open()))
    assert [r["video"] for r in rows] == [f"{pseudo}.mp4"] * 2 and (dest / f"{pseudo}.mp4").is_file()
    assert [e.reason for e in report.entries if e.status == "quarantined"] == [  # `comment` dropped: no frames left
        "line 1: expected a header with `video` and `frame` columns; the file is quarantined"
    ]
    assert find_needles(dest, [PHI_CASE, "555-123-4567"]) == []


def test_bad_usage_is_refused(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(UsageError, match="unknown dataset format"):
        deidentify_dataset(tmp_path, "kinetics", tmp_path / "o", key, reid_map=tmp_path / "r.json", progress=False)
    (tmp_path / "in").mkdir()
    with pytest.raises(UsageError, match="outside the output folder"):
        deidentify_dataset(
            tmp_path / "in", "csv", tmp_path / "o", key, reid_map=tmp_path / "o" / "r.json", progress=False
        )


def test_every_dataset_format_has_a_deid_layout() -> None:
    # The formats the readers know are the formats ingest can de-identify: a new one needs both.
    assert set(LAYOUTS) == set(FORMATS)
