"""Fail closed by structure, replayed as the attacks that found the holes: free text, CSV and JSON label files
carrying identifiers, and videos from devices no recorder rule knows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from deid_fixtures import find_needles, frames_for, in_body, make_video
from PIL import Image

from protocols.errors import DeidError
from site_node.deid.command import register
from site_node.deid.dataset import deidentify_dataset
from site_node.deid.labels_allowlist import coco_json, labels_csv, phase_txt
from site_node.deid.phi_scan import categories, scan
from site_node.deid.runner import deidentify_paths
from site_node.home import init_home
from site_node.ingest import ingest

NAME, MRN, BIRTH = "MUELLER_HANS", "1234567", "1961-03-02"
NEEDLES = ["MUELLER", "HANS", MRN, "1961", "123456789012", "Schmidt", "1614643200", "bed 4"]


def _deid(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="site_node")
    parser.add_argument("--home", type=Path, default=None)
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["deid", *argv, "--no-progress"])
    return args.func(args)


@pytest.mark.parametrize("profile", ["basic", "demo"])  # demo allows label text formats, never prose
def test_free_text_notes_are_quarantined_by_plain_deid(tmp_path: Path, key_file: Path, profile: str) -> None:
    notes = tmp_path / "in" / "handover_notes.txt"
    notes.parent.mkdir()
    notes.write_text(f"Patient Hans Mueller {MRN}, bed 4\nDr. Schmidt to review\n")
    out = tmp_path / "out"
    assert _deid([str(notes), "--out", str(out), "--key-file", str(key_file), "--profile", profile]) == 3
    report = json.loads((out / "deid-report.json").read_text())
    assert report["summary"]["quarantined"] == 1 and "free-text file" in report["entries"][0]["reason"]
    assert find_needles(out, ["Mueller", MRN, "Schmidt", "bed 4", "handover"]) == []


def test_allowed_label_text_is_rebuilt_not_copied(tmp_path: Path, key_file: Path) -> None:
    phase = tmp_path / "in" / "video01-phase.txt"
    phase.parent.mkdir()
    phase.write_text("Frame\tPhase\tNurse\n0\tPreparation\tMUELLER\n25\tClippingCutting\tMUELLER\n")
    out = tmp_path / "out"
    assert _deid([str(phase), "--out", str(out), "--key-file", str(key_file), "--profile", "demo"]) == 0
    entry = json.loads((out / "deid-report.json").read_text())["entries"][0]
    assert entry["actions"] == {"text_fields_dropped": 2, "text_rewritten": 1}
    assert (out / entry["output"]).read_text() == "Frame\tPhase\n0\tPreparation\n25\tClippingCutting\n"


def test_csv_labels_keep_only_allowed_columns_and_file_names(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    rows = ["video,frame,phase,mrn,surgeon"]
    for folder, mrn in ((f"{NAME}_{BIRTH}", MRN), ("ROSSI_ANNA_1970-05-06", "7654321")):  # two patients' or3.mp4
        (src / folder).mkdir(parents=True)
        make_video(src / folder / "or3.mp4", frames_for(60))
        rows += [f"{folder}/or3.mp4,0,Preparation,{mrn},Dr. Schmidt", f"{folder}/or3.mp4,25,ClippingCutting,{mrn},"]
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    home = init_home(tmp_path / "site", "a")
    result = ingest(home, src, "csv", out_of_body="none", profile="demo")
    assert len(result.dataset.videos) == 2  # the folder told them apart; the file name alone must too
    assert find_needles(home.store_dir, [*NEEDLES, "ROSSI", "ANNA", "7654321", "1970"]) == []
    report = json.loads(next(home.store_dir.rglob("deid-report.json")).read_text())
    assert report["summary"]["actions"]["label_fields_dropped"] == 8  # two columns x four rows
    label = next(home.store_dir.rglob("*.csv")).read_text().splitlines()
    assert label[0] == "video,frame,phase" and "/" not in label[1]


def test_json_labels_drop_unexpected_keys_and_numbers(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "cholect50"
    (src / "videos" / "VID01").mkdir(parents=True)
    (src / "labels").mkdir()
    for i in range(3):
        Image.fromarray(in_body(i)).save(src / "videos" / "VID01" / f"{i:06d}.png")
    label = {
        "video": "VID01",
        "patient_mrn": 123456789012,
        "surgeon": "Dr. Schmidt",
        "operation_date": 1614643200,
        "fps": 1,
        "categories": {"phase": {"0": "preparation"}},
        "annotations": {"0": [[1, 0, 1, 0.1, 0.1, 0.2, 0.2, 2, 3, 1, 0.3, 0.3, 0.1, 0.1, 0]]},
    }
    (src / "labels" / "VID01.json").write_text(json.dumps(label))
    dest = tmp_path / "store"
    report = deidentify_dataset(
        src, "cholect50", dest, key, reid_map=tmp_path / "r.json", progress=False, profile="demo"
    )
    assert report.n_quarantined() == 0
    out = json.loads(next((dest / "labels").glob("*.json")).read_text())
    assert sorted(out) == ["annotations", "categories", "fps"]
    assert report.to_dict()["summary"]["actions"]["label_fields_dropped"] == 4
    assert find_needles(dest, NEEDLES) == []


@pytest.mark.parametrize(
    ("label", "where"),
    [
        ({"annotations": {"0": [[1, 0, 1, MRN]]}}, "annotations"),  # an identifier hidden in a kept number field
        ({"annotations": {"0": [[1]]}, "categories": {"phase": {"0": f"prep {MRN}"}}}, "categories"),
        ({"annotations": {"1614643200": [[1]]}}, "annotations"),  # an epoch date as a frame index
    ],
)
def test_kept_fields_must_hold_what_the_field_may_hold(label: dict, where: str) -> None:
    from site_node.deid.labels_allowlist import cholect50_json

    with pytest.raises(DeidError, match=where) as err:
        cholect50_json({**label, "annotations": label["annotations"]})
    assert MRN not in str(err.value) and "1614643200" not in str(err.value)  # reasons never quote values


def test_label_values_come_from_the_task_vocabulary() -> None:
    with pytest.raises(DeidError, match="phase label"):
        phase_txt(f"Frame\tPhase\n0\t{NAME}\n")
    with pytest.raises(DeidError, match="action label"):
        labels_csv("video,frame,action\nv.mp4,0,Hans Mueller\n", lambda s: "vX")
    with pytest.raises(DeidError, match="category name"):
        coco_json({"images": [], "categories": [{"id": 1, "name": f"Patient {MRN}"}]}, str, str)


def test_seven_digit_numbers_are_flagged_by_the_second_net() -> None:
    assert categories(scan(f"case {MRN} ok")) == ["long number"]
    assert categories(scan("id 123456")) == ["long number"] and scan("frame 12345") == []


@pytest.mark.parametrize(("profile", "status"), [("basic", "quarantined"), ("demo", "ok")])
def test_unknown_device_needs_an_explicit_profile_choice(tmp_path: Path, key: bytes, profile: str, status: str) -> None:
    src = make_video(tmp_path / "clip.mp4", frames_for(10))
    report = deidentify_paths([src], tmp_path / "out", key, profile, progress=False)
    entry = report.entries[0]
    assert entry.status == status
    header = report.to_dict()
    if status == "ok":
        assert entry.actions["unknown_device_assumed_clean"] == 1 and header["unknown_devices"] == "assume-clean"
    else:
        assert "matches no recorder rule" in str(entry.reason) and header["unknown_devices"] == "quarantine"
