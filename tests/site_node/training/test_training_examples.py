"""Training examples: hierarchical targets from phase and tool files, answer-only label masking, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protocols.errors import DataError
from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target
from site_node.datasets.cholec80 import read_phase_file
from site_node.evaluation import select_frames
from site_node.model.loading import LoadedModel
from site_node.store import DatasetEntry, DataStore, VideoEntry
from site_node.synthetic.videos import synthesize_site
from site_node.training.examples import (
    IGNORE,
    FrameAugment,
    build_training_set,
    encode_batch,
    load_frames,
    read_tool_file,
    tool_file_for,
)
from site_node.video import probe_video


def test_tool_file_is_read_by_column_name(tmp_path: Path) -> None:
    f = tmp_path / "video01-tool.txt"
    f.write_text("Frame\tSpecimenBag\tGrasper\n0\t0\t1\n25\t1\t1\n")
    assert read_tool_file(f) == {0: ("grasper",), 25: ("specimen bag", "grasper")}
    f.write_text("Frame\tGrasper\tLaser\n0\t1\t0\n")
    with pytest.raises(DataError, match="unknown tool column 'Laser'"):
        read_tool_file(f)
    f.write_text("Frame\tGrasper\n0\t2\n")
    with pytest.raises(DataError, match=r":2: expected a frame number and 1 0/1 values, got '0\\t2'"):
        read_tool_file(f)


def test_training_set_uses_phase_and_tool_labels(store: DataStore) -> None:
    ts = build_training_set(store, sample_every_s=1.0)
    video = next(iter(ts.videos.values()))
    phases = read_phase_file(store.path(video.labels["phase"]), load_task("phase"))
    tool_path = tool_file_for(store, video)
    assert tool_path is not None and tool_path.name == f"{video.video_id}-tool.txt"
    tools = read_tool_file(tool_path)
    mine = [ex for ex in ts.examples if ex.video_id == video.video_id]
    assert [ex.frame for ex in mine] == select_frames(list(phases), video.fps, 1.0)
    for ex in mine:
        row = tools[max(f for f in tools if f <= ex.frame)]
        assert ex.target == hierarchical_target(phases[ex.frame], row)
    assert set(ts.indices_by_video()) == set(ts.videos) and len(ts.videos) == 3


def test_triplets_and_cvs_fill_l1_l2_and_l3(tmp_path: Path) -> None:
    """A CholecT50 file with phases (1 fps) and a CSV of CVS criteria (video numbering) on one 10 fps video."""
    path = synthesize_site(tmp_path / "data", "t50", 1, 1.0, 5, seconds=7.0)[0]
    gr, hk = (
        [0, 0, 1, -1, -1, -1, -1, 0, 0, 1, -1, -1, -1, -1, 0],
        [1, 1, 1, -1, -1, -1, -1, 1, 1, 1, -1, -1, -1, -1, 0],
    )
    cats = {
        "triplet": {"0": "grasper,retract,gallbladder", "1": "hook,dissect,cystic_plate"},
        "instrument": {"0": "grasper", "1": "hook"},
        "verb": {"0": "retract", "1": "dissect"},
        "target": {"0": "gallbladder", "1": "cystic_plate"},
        "phase": {"0": "carlot-triangle-dissection", "1": "clipping-and-cutting"},
    }
    labels = {"fps": 1, "categories": cats, "annotations": {"0": [gr], "1": [gr, hk], "2": [[-1] * 14 + [1]]}}
    (tmp_path / "t50.json").write_text(json.dumps(labels))
    (tmp_path / "cvs.csv").write_text(f"video,frame,c1,c2,c3\n{path.stem},0,0,1,1\n{path.stem},15,1,1,1\n")
    info = probe_video(path)
    store = DataStore(tmp_path)
    store.add(
        DatasetEntry(
            "ds-t50",
            "cholect50",
            (
                VideoEntry(
                    path.stem,
                    path.relative_to(tmp_path).as_posix(),
                    {"phase": "t50.json", "triplet": "t50.json", "cvs": "cvs.csv"},
                    info.fps,
                    info.n_frames,
                ),
            ),
        )
    )
    ts = build_training_set(store, sample_every_s=1.0)
    assert [ex.target for ex in ts.examples] == [
        "<think>L1: grasper. L2: grasper retract gallbladder. L3: CalotTriangleDissection, critical view of safety "
        "not achieved.</think><answer>CalotTriangleDissection</answer>",
        "<think>L1: grasper, hook. L2: grasper retract gallbladder; hook dissect cystic plate. L3: "
        "CalotTriangleDissection, critical view of safety not achieved.</think>"
        "<answer>CalotTriangleDissection</answer>",
        "<think>L1: no instrument. L3: ClippingCutting, critical view of safety achieved.</think>"
        "<answer>ClippingCutting</answer>",
    ]
    assert len(load_frames(store, ts, {0, 1, 2})) == 3  # label seconds 0-2 are decoded frames 0, 10, 20


def test_labels_cover_the_answer_and_eos_only(lm: LoadedModel) -> None:
    images = [Image.new("RGB", (112, 84), (90, 40, 40)), Image.new("RGB", (56, 56), (10, 90, 40))]
    answers = [hierarchical_target("CalotTriangleDissection", ["hook"]), hierarchical_target("Preparation")]
    batch, labels = encode_batch(lm.processor, images, answers, load_task("phase").render_prompt(), lm.device, lm.dtype)
    tok = lm.processor.tokenizer
    assert tok.padding_side == "left"  # restored for generation
    for row, answer in enumerate(answers):
        kept = labels[row][labels[row] != IGNORE]
        assert tok.decode(kept) == answer + tok.eos_token
        n = len(kept)
        assert torch.equal(labels[row, -n:], batch["input_ids"][row, -n:])  # answers end at the last column
    assert batch["attention_mask"][1, 0] == 0  # the shorter sequence is padded on the left


def test_frames_are_decoded_for_the_wanted_examples(store: DataStore) -> None:
    ts = build_training_set(store, sample_every_s=1.0)
    wanted = {0, len(ts.examples) - 1}
    frames = load_frames(store, ts, wanted)
    assert set(frames) == wanted and all(im.size == (256, 192) for im in frames.values())


def test_augmentation_is_seeded_and_keeps_the_size() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(40, 200, (48, 64, 3), dtype=np.uint8))
    a = [np.asarray(FrameAugment(seed=3, prob=1.0)(image)) for _ in range(2)]
    assert a[0].shape == (48, 64, 3) and np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], np.asarray(image))


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no usable videos with phase labels"):
        build_training_set(DataStore(tmp_path), 1.0)
