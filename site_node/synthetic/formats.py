"""Synthetic labels in every supported format (CholecT50, Endoscapes, COCO, CSV) for the videos of videos.py."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError
from site_node.synthetic import instruments, render
from site_node.synthetic import videos as synth_videos
from site_node.video import sample_frames

# What each instrument does in each phase (instrument, verb, target: all CholecT50 triplets), by phase NAME.
SCENE_TRIPLETS: dict[str, dict[str, tuple[str, str]]] = {
    "Preparation": {"Grasper": ("retract", "gallbladder"), "Hook": ("dissect", "omentum")},
    "CalotTriangleDissection": {"Grasper": ("retract", "gallbladder"), "Hook": ("dissect", "cystic_duct")},
    "ClippingCutting": {
        "Grasper": ("retract", "gallbladder"),
        "Clipper": ("clip", "cystic_duct"),
        "Scissors": ("cut", "cystic_duct"),
    },
    "GallbladderDissection": {"Grasper": ("retract", "gallbladder"), "Hook": ("dissect", "gallbladder")},
    "GallbladderPackaging": {"Grasper": ("pack", "gallbladder")},
    "CleaningCoagulation": {
        "Grasper": ("retract", "liver"),
        "Bipolar": ("coagulate", "liver"),
        "Irrigator": ("aspirate", "fluid"),
    },
    "GallbladderRetraction": {"Grasper": ("grasp", "specimen_bag")},
}
# The phase's main action, for the CSV action labels (one action per frame).
MAIN_ACTION = {
    "Preparation": "retract",
    "CalotTriangleDissection": "dissect",
    "ClippingCutting": "clip",
    "GallbladderDissection": "dissect",
    "GallbladderPackaging": "pack",
    "CleaningCoagulation": "coagulate",
    "GallbladderRetraction": "grasp",
}
INSTRUMENTS = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
VERBS = ("grasp", "retract", "dissect", "coagulate", "clip", "cut", "aspirate", "irrigate", "pack", "null_verb")
TARGETS = (
    "gallbladder",
    "cystic_plate",
    "cystic_duct",
    "cystic_artery",
    "cystic_pedicle",
    "blood_vessel",
    "fluid",
    "abdominal_wall_cavity",
    "liver",
    "adhesion",
    "omentum",
    "peritoneum",
    "gut",
    "specimen_bag",
    "null_target",
)
KEYFRAME_EVERY_S = 6.0  # Endoscapes-style CVS keyframes and COCO box frames


@dataclass(frozen=True)
class SyntheticVideo:
    """A video videos.py wrote, with the plan and layout it drew (replayed from the same random stream)."""

    stem: str
    path: Path
    fps: int
    size: tuple[int, int]
    plan: synth_videos.VideoPlan
    layout: Any
    shift: float


def replay(cholec80_dir: Path, site: str, seed: int, shift: float, seconds: float) -> list[SyntheticVideo]:
    """Re-draw each video's plan exactly as synthesize_site did, and check it against the phase file it wrote."""
    domain, out = render.SiteDomain(shift), []
    for path in sorted((Path(cholec80_dir) / "videos").glob("video*.mp4")):
        rng = synth_videos._site_rng(site, seed, int(path.stem[len("video") :]))
        n_frames = max(len(render.phase_names()) * domain.fps, int(seconds * rng.uniform(0.85, 1.15) * domain.fps))
        plan = synth_videos.plan_video(rng, n_frames, domain.fps)
        layout = render._Layout.draw(rng)
        phase_file = Path(cholec80_dir) / "phase_annotations" / f"{path.stem}-phase.txt"
        written = [line.split("\t")[1] for line in phase_file.read_text().splitlines()[1:] if line]
        if written != [render.phase_names()[k] for k in plan.phases]:
            raise ConfigError(f"{phase_file}: videos.py no longer draws its videos as formats.py replays them")
        out.append(SyntheticVideo(path.stem, path, domain.fps, domain.size, plan, layout, shift))
    return out


def tool_box(v: SyntheticVideo, i: int, tool: str) -> tuple[float, float, float, float]:
    """Normalised xyxy around a painted instrument of frame i of a video."""
    return scene_box(v.layout, i / v.fps, v.plan.tools[i], tool, v.size, v.shift)


def scene_box(
    layout: Any, t: float, tools: Sequence[str], tool: str, size: tuple[int, int], shift: float = render.SOURCE_SHIFT
) -> tuple[float, float, float, float]:
    """Normalised xyxy around a painted instrument (shaft from its entry point to its tip, plus the jaws)."""
    (w, h), m = size, layout.motion
    cx = layout.organ[0] + 0.05 * math.sin(2 * math.pi * t / 7.0 + m[0])
    cy = layout.organ[1] + 0.04 * math.sin(2 * math.pi * t / 5.0 + m[1])
    entry, tip = instruments.tool_geometry(tool, tools, (cx, cy), t, size, instruments.port_turn(t, shift, m[2]))
    pad_x, pad_y = 0.075, 0.075 * w / h  # half the shaft plus the jaws (0.05 of the width beyond the tip)
    x1, x2 = sorted((entry[0] / w, tip[0] / w))
    y1, y2 = sorted((entry[1] / h, tip[1] / h))

    def clip(a):
        return float(min(1.0, max(0.0, a)))

    return clip(x1 - pad_x), clip(y1 - pad_y), clip(x2 + pad_x), clip(y2 + pad_y)


def triplets_at(v: SyntheticVideo, i: int) -> list[tuple[str, str, str, tuple[float, float, float, float] | None]]:
    """(instrument, verb, target, instrument box) of every instrument acting in frame i."""
    phase = render.phase_names()[v.plan.phases[i]]
    return [
        (tool.lower(), verb, target, tool_box(v, i, tool) if tool in instruments.TOOL_ENTRY else None)
        for tool, (verb, target) in SCENE_TRIPLETS[phase].items()
        if tool in v.plan.tools[i]
    ]


def cvs_at(v: SyntheticVideo, i: int) -> tuple[float, float, float]:
    """Raters' mean C1-C3: the view builds up through Calot's triangle dissection and holds from clipping on."""
    phase = v.plan.phases[i]
    span = [j for j, k in enumerate(v.plan.phases) if k == phase]
    return cvs_state(render.phase_names()[phase], (i - span[0]) / max(1, len(span)))


def cvs_state(phase: str, progress: float) -> tuple[float, float, float]:
    """Raters' mean C1-C3 in a phase, `progress` (0-1) of the way through it."""
    if phase == "Preparation":
        return 0.0, 0.0, 0.0
    if phase != "CalotTriangleDissection":
        return (1.0, 1.0, 0.67) if phase == "ClippingCutting" else (1.0, 1.0, 1.0)
    p = progress
    return (0.67 if p >= 0.5 else 0.0, 0.67 if p >= 0.75 else 0.33 if p >= 0.5 else 0.0, 0.33 if p >= 0.75 else 0.0)


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _cholect50_json(v: SyntheticVideo, vid: str) -> dict[str, Any]:
    triplets = _triplet_names()
    cats = {
        "instrument": dict(enumerate(INSTRUMENTS)),
        "verb": dict(enumerate(VERBS)),
        "target": dict(enumerate(TARGETS)),
        "triplet": dict(enumerate(triplets)),
    }
    annotations: dict[str, list[list[float]]] = {}
    for sec in range(int(len(v.plan.phases) / v.fps)):
        i = round(sec * v.fps)
        rows = []
        for inst, verb, target, box in triplets_at(v, i):
            bx = [box[0], box[1], box[2] - box[0], box[3] - box[1]] if box else [-1, -1, -1, -1]
            rows.append(
                [
                    triplets.index(f"{inst},{verb},{target}"),
                    INSTRUMENTS.index(inst),
                    1,
                    *bx,
                    VERBS.index(verb),
                    TARGETS.index(target),
                    1,
                    -1,
                    -1,
                    -1,
                    -1,
                    v.plan.phases[i],
                ]
            )
        annotations[str(sec)] = rows or [[-1] * 14 + [v.plan.phases[i]]]
    return {
        "video": vid,
        "fps": 1,
        "num_frames": len(annotations),
        "annotations": annotations,
        "categories": {k: {str(n): name for n, name in table.items()} for k, table in cats.items()},
    }


def _triplet_names() -> list[str]:
    from protocols.tasks import load_task

    return list(load_task("triplet").label_names)


def write_cholect50(videos: Sequence[SyntheticVideo], out: Path) -> Path:
    """`labels/VIDxx.json` at 1 fps (frame = second) beside `videos/VIDxx.mp4` (the same video, linked)."""
    for n, v in enumerate(videos, start=1):
        vid = f"VID{n:02d}"
        _link(v.path, out / "videos" / f"{vid}.mp4")
        (out / "labels").mkdir(parents=True, exist_ok=True)
        (out / "labels" / f"{vid}.json").write_text(json.dumps(_cholect50_json(v, vid)), encoding="utf-8")
    return out


def _keyframes(v: SyntheticVideo) -> list[int]:
    """Frames at 0, 6, 12 ... seconds (Endoscapes annotates one frame every few seconds)."""
    step = KEYFRAME_EVERY_S * v.fps
    return [round(k * step) for k in range(int(len(v.plan.phases) / step) + 1) if round(k * step) < len(v.plan.phases)]


def _write_images(v: SyntheticVideo, frames: list[int], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = set(frames)
    for index, image in sample_frames(v.path, 1):
        if index in wanted:
            image.save(folder / f"{v.stem}_{index}.jpg", quality=90)
        if index >= max(wanted):
            break


def write_endoscapes(videos: Sequence[SyntheticVideo], out: Path) -> Path:
    """One COCO JSON whose keyframe images carry `ds` = [C1, C2, C3] (raters' means), Endoscapes2023-style."""
    images, next_id = [], 1
    for vid_no, v in enumerate(videos, start=1):
        frames = _keyframes(v)
        _write_images(v, frames, out)
        for f in frames:
            images.append(
                {
                    "id": next_id,
                    "file_name": f"{v.stem}_{f}.jpg",
                    "width": v.size[0],
                    "height": v.size[1],
                    "video_id": vid_no,
                    "video_name": v.stem,
                    "frame_id": f,
                    "is_ds_keyframe": True,
                    "ds": list(cvs_at(v, f)),
                }
            )
            next_id += 1
    data = {
        "info": {"version": "synthetic"},
        "images": images,
        "annotations": [],
        "categories": [{"id": 1, "name": "cystic_duct"}],
    }
    (out / "annotation_coco.json").write_text(json.dumps(data), encoding="utf-8")
    return out


def write_coco(videos: Sequence[SyntheticVideo], out: Path) -> Path:
    """COCO boxes (absolute xywh) of the instruments on keyframe images; category ids deliberately unordered."""
    cats = {name: 10 + 7 * k for k, name in enumerate(reversed(INSTRUMENTS))}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for v in videos:
        frames = _keyframes(v)
        _write_images(v, frames, out / "images")
        w, h = v.size
        for f in frames:
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"images/{v.stem}_{f}.jpg", "width": w, "height": h})
            for inst, _, _, box in triplets_at(v, f):
                if box is not None:
                    x1, y1, x2, y2 = box
                    anns.append(
                        {
                            "id": len(anns) + 1,
                            "image_id": image_id,
                            "category_id": cats[inst],
                            "iscrowd": 0,
                            "bbox": [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h],
                            "area": (x2 - x1) * (y2 - y1) * w * h,
                        }
                    )
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n.capitalize()} for n, i in cats.items()],
    }
    (out / "instances.json").write_text(json.dumps(data), encoding="utf-8")
    return out


def write_csv(videos: Sequence[SyntheticVideo], out: Path) -> Path:
    """`action_labels.csv` (video,frame,action) and `cvs_labels.csv` (video,frame,c1,c2,c3), one row per second.

    (A CSV named after one of its columns, such as action.csv, would be quarantined at ingest: de-identification
    treats file stems as case identifiers and refuses label text that repeats one.)
    """
    action, cvs = ["video,frame,action"], ["video,frame,c1,c2,c3"]
    for v in videos:
        _link(v.path, out / "videos" / v.path.name)
        for sec in range(int(len(v.plan.phases) / v.fps)):
            i = round(sec * v.fps)
            phase = render.phase_names()[v.plan.phases[i]]
            action.append(f"videos/{v.path.name},{i},{MAIN_ACTION[phase]}")
            cvs.append(f"videos/{v.path.name},{i}," + ",".join("1" if c >= 0.5 else "0" for c in cvs_at(v, i)))
    (out / "action_labels.csv").write_text("\n".join(action) + "\n", encoding="utf-8")
    (out / "cvs_labels.csv").write_text("\n".join(cvs) + "\n", encoding="utf-8")
    return out


WRITERS = {"cholect50": write_cholect50, "endoscapes": write_endoscapes, "coco": write_coco, "csv": write_csv}


def write_formats(
    cholec80_dir: Path,
    out: Path,
    site: str,
    seed: int,
    shift: float,
    *,
    seconds: float = 24.0,
    formats: Sequence[str] = tuple(WRITERS),
) -> dict[str, Path]:
    """Every other format for a synthesize_site() folder, each in out/FORMAT (ingestable on its own)."""
    unknown = sorted(set(formats) - set(WRITERS))
    if unknown:
        raise ConfigError(f"unknown formats {unknown}; expected some of {list(WRITERS)}")
    videos = replay(cholec80_dir, site, seed, shift, seconds)
    return {fmt: WRITERS[fmt](videos, Path(out) / fmt) for fmt in formats}


def synthesize_all(
    out: Path, site: str, videos: int, shift: float, seed: int, *, seconds: float = 24.0, progress: bool = False
) -> dict[str, Path]:
    """out/cholec80 (videos.py's videos and phase files) and out/FORMAT for every other format."""
    synth_videos.synthesize_site(Path(out) / "cholec80", site, videos, shift, seed, seconds=seconds, progress=progress)
    return {
        "cholec80": Path(out) / "cholec80",
        **write_formats(Path(out) / "cholec80", out, site, seed, shift, seconds=seconds),
    }
