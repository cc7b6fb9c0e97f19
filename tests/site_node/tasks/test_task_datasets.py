"""Label readers by name (CholecT50, Endoscapes, COCO, CSV), frame sources, and bad input named by file and line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from protocols.errors import DataError
from protocols.tasks import load_task
from site_node.datasets.frames import check_frames, iter_frames
from site_node.datasets.registry import guess_format, read_labels, scan
from site_node.evaluation import select_frames
from site_node.labels import LabelledBox
from site_node.scoring import LabelSpec, load_label_sets
from site_node.store import LabelKind
from site_node.task_runtime import runtime_for

GR, HK = "grasper,retract,gallbladder", "hook,dissect,cystic_plate"


def _cholect50(
    path: Path, *, triplet_names: dict[str, str] | None = None, phases: dict[str, str] | None = None
) -> Path:
    """Ids deliberately not CholecT50's own: only the file's names say what they mean."""
    cats = {
        "triplet": triplet_names or {"0": HK, "1": GR},
        "instrument": {"0": "hook", "1": "grasper"},
        "verb": {"0": "dissect", "1": "retract"},
        "target": {"0": "cystic_plate", "1": "gallbladder"},
    }
    if phases:
        cats["phase"] = phases
    gr = [1, 1, 1, 0.1, 0.2, 0.3, 0.4, 1, 1, 1, -1, -1, -1, -1, 0]
    hk = [0, 0, 1, -1, -1, -1, -1, 0, 0, 1, -1, -1, -1, -1, 0]
    data = {"fps": 1, "categories": cats, "annotations": {"0": [gr], "1": [gr, hk], "2": [[-1] * 14 + [0]]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def test_cholect50_is_read_by_name(tmp_path: Path) -> None:
    path = _cholect50(tmp_path / "labels" / "VID01.json")
    triplets = read_labels(LabelKind.TRIPLET, path, load_task("triplet"), "VID01")
    assert triplets.labels == {0: {GR}, 1: {GR, HK}, 2: frozenset()} and triplets.fps == 1.0
    actions = read_labels(LabelKind.ACTION, path, load_task("action"), "VID01")
    assert actions.labels == {0: "retract"} and actions.dropped == 2  # two verbs in frame 1, none in frame 2
    boxes = read_labels(LabelKind.BOXES, path, load_task("localization"), "VID01")
    assert boxes.labels[0][0].label == "grasper" and boxes.labels[0][0].xyxy == pytest.approx((0.1, 0.2, 0.4, 0.6))
    assert list(boxes.labels) == [0, 1]  # frames with a box only


def test_cholect50_phase_is_read_only_where_the_file_names_phases(tmp_path: Path) -> None:
    path = _cholect50(tmp_path / "with" / "labels" / "VID01.json", phases={"0": "carlot-triangle-dissection"})
    phases = read_labels(LabelKind.PHASE, path, load_task("phase"), "VID01")
    assert phases.labels == {0: "CalotTriangleDissection", 1: "CalotTriangleDissection", 2: "CalotTriangleDissection"}
    assert phases.fps == 1.0
    assert LabelKind.PHASE in scan(tmp_path / "with", "cholect50")[0][0].labels
    _cholect50(tmp_path / "without" / "labels" / "VID01.json")
    assert LabelKind.PHASE not in scan(tmp_path / "without", "cholect50")[0][0].labels
    path.write_text(path.read_text().replace("carlot-triangle-dissection", "lunch"))
    with pytest.raises(DataError, match=r"VID01\.json:\d+: frame 0: unknown phase 'lunch'"):
        read_labels(LabelKind.PHASE, path, load_task("phase"), "VID01")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (None, r"VID01\.json:\d+: frame 0: unknown triplet 'grasper,juggle,gallbladder'"),
        ('{"fps": 1,\n "categories": {},\n "annotations": {"0": [[1, 2,]]}}', r"VID01\.json:3: malformed JSON"),
        (
            '{"fps": 1, "categories": {}, "annotations": {"0": [[7, -1, -1, -1, -1, -1, -1, -1, -1]]}}',
            r"VID01\.json:1: frame '0': triplet id 7 is not in the file's categories",
        ),
    ],
)
def test_cholect50_bad_labels_name_file_line_and_value(tmp_path: Path, text: str | None, pattern: str) -> None:
    path = tmp_path / "VID01.json"
    if text is None:
        _cholect50(path, triplet_names={"0": HK, "1": "grasper,juggle,gallbladder"})
    else:
        path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        read_labels(LabelKind.TRIPLET, path, load_task("triplet"), "VID01")


CSV = (
    "video,frame,action\nv1,0,dissect\nv1,5,dissect,extra\nv2,0,Retracting\nv2,x,cut\nv3,0,juggle\n"
    "v4,0,cut\nv4,0,clip\n"
)


@pytest.mark.parametrize(
    ("video", "outcome"),
    [
        ("v1", r"actions\.csv:3: expected 3 fields, got 4"),
        ("v2", r"actions\.csv:5: frame must be a non-negative integer, got 'x'"),
        ("v3", r"actions\.csv:6: unknown action 'juggle'"),
        ("v4", r"actions\.csv:8: frame 0 of video 'v4' is labelled twice"),
        ("v9", r"no rows for video 'v9'"),
    ],
)
def test_csv_errors_name_file_line_and_value(tmp_path: Path, video: str, outcome: str) -> None:
    path = tmp_path / "actions.csv"
    path.write_text(CSV)
    with pytest.raises(DataError, match=outcome):
        read_labels(LabelKind.ACTION, path, load_task("action"), video)


def test_csv_cvs_and_actions_by_name(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("Video,Frame,C1,C2,C3,action\nvideos/a.mp4,10,0.67,no,0.33,Suction\n")
    assert read_labels(LabelKind.CVS, path, load_task("cvs"), "a").labels == {10: (True, False, False)}
    assert read_labels(LabelKind.ACTION, path, load_task("action"), "a").labels == {10: "aspirate"}
    (tmp_path / "bad.csv").write_text("clip,frame\nx,1\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: expected a header with `video` and `frame`"):
        read_labels(LabelKind.ACTION, tmp_path / "bad.csv", load_task("action"), "x")


def _coco(path: Path, images: list[dict], anns: list[dict], cats: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}, indent=1))
    return path


def test_endoscapes_rounds_raters_mean_at_one_half(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "12_150.jpg", "width": 10, "height": 10, "ds": [0.33, 0.5, 0.67]},
        {"id": 2, "file_name": "12_300.jpg", "width": 10, "height": 10, "ds": [1, 1, 1], "is_ds_keyframe": False},
        {"id": 3, "file_name": "13_150.jpg", "width": 10, "height": 10, "ds": [1.5, 0, 0]},
    ]
    path = _coco(tmp_path / "annotation_coco.json", images, [], [])
    fl = read_labels(LabelKind.CVS, path, load_task("cvs"), "12")
    assert fl.labels == {150: (False, True, True)} and fl.images[150] == tmp_path / "12_150.jpg"
    with pytest.raises(
        DataError, match=r"annotation_coco\.json:\d+: 13_150\.jpg: expected 3 criteria in \[0, 1\], got \[1\.5, 0, 0\]"
    ):
        read_labels(LabelKind.CVS, path, load_task("cvs"), "13")


def test_coco_boxes_by_category_name(tmp_path: Path) -> None:
    images = [{"id": 5, "file_name": "frames/v1_40.jpg", "width": 200, "height": 100}]
    cats = [{"id": 7, "name": "Hook"}, {"id": 2, "name": "Grasping forceps"}, {"id": 3, "name": "Retractor"}]
    ok = _coco(
        tmp_path / "ok.json", images, [{"id": 1, "image_id": 5, "category_id": 2, "bbox": [20, 10, 40, 30]}], cats
    )
    fl = read_labels(LabelKind.BOXES, ok, load_task("localization"), "v1")
    assert fl.labels == {40: [LabelledBox("grasper", 0.1, 0.1, 0.3, 0.4)]} and fl.sizes[40] == (200, 100)
    bad = _coco(tmp_path / "bad.json", images, [{"id": 9, "image_id": 5, "category_id": 3, "bbox": [0, 0, 5, 5]}], cats)
    with pytest.raises(DataError, match=r"bad\.json:\d+: annotations\[0\]: unknown class 'Retractor'"):
        read_labels(LabelKind.BOXES, bad, load_task("localization"), "v1")


def test_frame_folders_are_read_by_frame_number(tmp_path: Path) -> None:
    _cholect50(tmp_path / "labels" / "VID01.json")
    folder = tmp_path / "videos" / "VID01"
    folder.mkdir(parents=True)
    for n, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (16, 12), colour).save(folder / f"{n:06d}.png")
    found, _ = scan(tmp_path, "cholect50")
    assert found[0].media == folder and found[0].n_frames == 3
    fl = read_labels(LabelKind.TRIPLET, found[0].labels[LabelKind.TRIPLET], load_task("triplet"), "VID01")
    check_frames(fl, folder, found[0].labels[LabelKind.TRIPLET])
    got = list(iter_frames(folder, fl, [0, 2], video_fps=1.0))
    assert [f for f, _ in got] == [0, 2] and got[1][1].getpixel((0, 0)) == (0, 0, 255)
    (folder / "000002.png").unlink()
    with pytest.raises(DataError, match=r"VID01\.json:\d+: frame 2 has no image in VID01/"):
        check_frames(fl, folder, found[0].labels[LabelKind.TRIPLET])


def test_a_video_with_broken_labels_is_skipped_and_listed(synthetic_site: Path, tmp_path: Path) -> None:
    data = shutil.copytree(synthetic_site / "cholec80", tmp_path / "cholec80")
    phase = data / "phase_annotations" / "video02-phase.txt"
    n = len(phase.read_text().splitlines())
    phase.write_text(phase.read_text() + f"{n + 500}\tPreparation\n")
    labels, skipped = load_label_sets(runtime_for("phase"), [LabelSpec(data, "cholec80", "c80")])
    assert [v.video for v in labels] == ["video01"]
    assert re.search(
        rf"video02-phase\.txt:{n + 1}: frame {n + 500} is beyond the video's \d+ frames", skipped["c80/video02"]
    )


_COCO = {"images": [{"id": 1, "file_name": "v_1.png", "width": 8, "height": 8}], "annotations": []}
_ENDO = {"images": [{"id": 1, "file_name": "v_1.png", "ds": [0.2, 0.6, 1.0]}]}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"videos/v.mp4": "", "phase_annotations/v-phase.txt": "", "labels/a.json": "{}"}, "cholec80"),
        ({"labels/VID01.json": "{}", "a.json": _COCO}, "cholect50"),
        ({"labels/notes.txt": "", "a.json": _ENDO}, "endoscapes"),
        ({"a.json": {"images": [{"file_name": "v_1.png", "C1": 1}]}}, "endoscapes"),
        ({"a.json": _COCO, "b.json": _ENDO}, "coco"),  # the first COCO JSON (by name) decides
        ({"a.json": _ENDO, "b.json": _COCO}, "endoscapes"),
        ({"a.json": "{broken", "b.json": {"images": "no"}, "x.csv": "video,frame\n"}, "csv"),
        ({"notes.txt": ""}, None),
    ],
)
def test_guess_format_by_layout(tmp_path: Path, files: dict[str, object], expected: str | None) -> None:
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content if isinstance(content, str) else json.dumps(content))
    assert guess_format(tmp_path) == expected


@pytest.mark.parametrize(
    ("name", "kind", "reader"),
    [
        ("v-phase.txt", LabelKind.ACTION, None),  # a Cholec80 text file holds phases only
        ("labels.csv", LabelKind.BOXES, None),  # CSV files hold no boxes
        ("VID01.json", LabelKind.CVS, "Endoscapes"),  # a CholecT50 file has no CVS: the COCO/Endoscapes reader says so
        ("boxes", LabelKind.BOXES, None),
    ],
)
def test_label_files_without_a_reader_are_named(tmp_path: Path, kind: LabelKind, name: str, reader: str | None) -> None:
    path = tmp_path / name
    path.write_text(json.dumps({"categories": {}, "annotations": {"0": []}}) if name.endswith(".json") else "x")
    pattern = r"a COCO file needs an `images` list" if reader else rf"no reader for {kind.value} labels"
    with pytest.raises(DataError, match=pattern):
        read_labels(kind, path, load_task("cvs"), "VID01")


@pytest.mark.parametrize(
    ("frames", "fps", "every", "chosen"),
    [
        (list(range(100)), 25.0, 1.0, [0, 25, 50, 75]),  # dense labels in the video's numbering
        (list(range(24)), 1.0, 6.0, [0, 6, 12, 18]),  # CholecT50: one label per second
        ([0, 150, 300], 1.0, 6.0, [0, 150, 300]),  # sparse keyframes of unknown rate: all of them
        (list(range(3, 61)), 10.0, 2.0, [3, 20, 40, 60]),  # labels that start late
    ],
)
def test_select_frames(frames: list[int], fps: float, every: float, chosen: list[int]) -> None:
    assert select_frames(frames, fps, every) == chosen
