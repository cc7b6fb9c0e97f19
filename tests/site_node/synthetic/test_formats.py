"""Synthetic labels in every format, derived from the same videos and phase timeline as the Cholec80 files."""

from __future__ import annotations

import json
from pathlib import Path

from protocols.tasks import load_task
from site_node.datasets.registry import build_entries, detect, read_labels
from site_node.store import LabelKind
from site_node.synthetic.formats import MAIN_ACTION, SCENE_TRIPLETS

KINDS = {
    "cholec80": {"phase"},
    "cholect50": {"triplet", "action", "boxes"},
    "endoscapes": {"cvs"},
    "coco": {"boxes"},
    "csv": {"action", "cvs"},
}


def test_every_format_is_written_and_read_back(synthetic_site: Path) -> None:
    found = {fmt: folder for _, fmt, folder in detect(synthetic_site)}
    assert set(found) == set(KINDS)
    for fmt, folder in found.items():
        entries, skipped = build_entries(folder, fmt, synthetic_site)
        assert len(entries) == 2 and not skipped, (fmt, skipped)
        assert all(set(e.labels) == KINDS[fmt] for e in entries), fmt


def test_labels_follow_the_phase_timeline(synthetic_site: Path) -> None:
    phases = read_labels(
        LabelKind.PHASE,
        synthetic_site / "cholec80" / "phase_annotations" / "video01-phase.txt",
        load_task("phase"),
        "video01",
    ).labels
    t50 = read_labels(
        LabelKind.TRIPLET, synthetic_site / "cholect50" / "labels" / "VID01.json", load_task("triplet"), "VID01"
    )
    data = json.loads((synthetic_site / "cholect50" / "labels" / "VID01.json").read_text())
    fps = len(phases) / len(data["annotations"])  # one label a second over the whole video
    for sec, triplets in t50.labels.items():
        phase = list(phases.values())[int(round(sec * round(fps)))]
        allowed = {f"{tool.lower()},{v},{t}" for tool, (v, t) in SCENE_TRIPLETS[phase].items()}
        assert triplets <= allowed, (sec, phase, triplets)
    actions = read_labels(
        LabelKind.ACTION, synthetic_site / "csv" / "action_labels.csv", load_task("action"), "video01"
    )
    assert all(a == MAIN_ACTION[phases[f]] for f, a in actions.labels.items())
    cvs = read_labels(
        LabelKind.CVS, synthetic_site / "endoscapes" / "annotation_coco.json", load_task("cvs"), "video01"
    )
    assert all(v == (False, False, False) for f, v in cvs.labels.items() if phases[f] == "Preparation")
    assert all(v == (True, True, True) for f, v in cvs.labels.items() if phases[f] == "GallbladderDissection")
