"""Warm-up scenes and their answers for every task family, in Surg-R1's three-level format, from the scene itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from site_node.answer_format import hierarchical_target, tool_word
from site_node.synthetic import instruments, render
from site_node.synthetic.formats import MAIN_ACTION, SCENE_TRIPLETS, cvs_state, scene_box

# Every task family the demo generates answers for, and the share of warm-up frames that ask it (the boxes,
# the longest answers to learn, get the most).
WARMUP_TASKS = ("phase", "triplet", "action", "cvs", "localization")
WARMUP_WEIGHTS = (2, 2, 2, 2, 3)


@dataclass(frozen=True)
class Scene:
    """What one rendered frame shows, as the label writers of synthetic/formats.py would label it."""

    phase: str
    tools: tuple[str, ...]  # render.TOOL_NAMES present (a Cholec80 tool file's row)
    triplets: tuple[tuple[str, str, str], ...]  # (instrument, verb, target) of every acting instrument
    boxes: tuple[tuple[str, tuple[float, float, float, float]], ...]  # acting, painted instruments
    cvs: tuple[bool, bool, bool]


def task_mix(scenes: Sequence[Scene], rng: np.random.Generator) -> list[str]:
    """The task each warm-up frame is asked, in the shares of WARMUP_WEIGHTS, shuffled. The action prompt goes
    to frames whose instruments all do one thing (evaluation skips the others: no single action is right)."""
    cycle = [t for t, w in zip(WARMUP_TASKS, WARMUP_WEIGHTS, strict=True) for _ in range(w)]
    tasks = [cycle[int(k)] for k in rng.permutation(np.arange(len(scenes)) % len(cycle))]
    single = [len({v for _, v, _ in s.triplets}) == 1 for s in scenes]
    ambiguous = [i for i, t in enumerate(tasks) if t == "action" and not single[i]]
    donors = [i for i, t in enumerate(tasks) if t != "action" and single[i]]
    for i, j in zip(ambiguous, donors, strict=False):  # swap tasks: the shares stay those of WARMUP_WEIGHTS
        tasks[i], tasks[j] = tasks[j], tasks[i]
    return ["triplet" if t == "action" and not single[i] else t for i, t in enumerate(tasks)]


def render_scenes(
    phase_indices: Sequence[int], rng: np.random.Generator, frames_per_scene: int = 16
) -> tuple[list[np.ndarray], list[Scene]]:
    """Source-domain frames like render.render_batch(vary_camera=True), keeping what the boxes need."""
    names = render.phase_names()
    nominal = render.SiteDomain(render.SOURCE_SHIFT).camera
    size = (render.W, render.H)
    frames, scenes = [], []
    for start in range(0, len(phase_indices), frames_per_scene):
        camera = nominal.varied(rng)  # varied exposure and noise (never a colour cast): a stable answer format
        layout = render._Layout.draw(rng)
        draw = render._Renderer(layout, camera, size, rng, noise_bank=4)
        for k in phase_indices[start : start + frames_per_scene]:
            name = names[int(k)]
            jitter = float(rng.normal(0.0, render.HUE_JITTER_DEG))
            cast = float(rng.normal(camera.cast_mean_deg, camera.cast_drift_deg))
            tools = render._sample_tools(name, rng)
            t = float(rng.uniform(0, 60))
            frames.append(draw(int(k), jitter, cast, tools, t, rng))
            acting = [tool for tool in tools if tool in SCENE_TRIPLETS[name]]
            acts = tuple((tool.lower(), *SCENE_TRIPLETS[name][tool]) for tool in acting)
            boxes = tuple(
                (tool.lower(), scene_box(layout, t, tools, tool, size))
                for tool in acting
                if tool in instruments.TOOL_ENTRY
            )
            criteria = cvs_state(name, float(rng.random()))  # how far into its phase the frame lies
            scenes.append(Scene(name, tools, acts, boxes, (criteria[0] >= 0.5, criteria[1] >= 0.5, criteria[2] >= 0.5)))
    return frames, scenes


def task_answer(task: str, scene: Scene) -> str:
    """The final answer each task's prompt asks for, in the grammar its parser reads."""
    if task == "phase":
        return scene.phase
    if task == "action":  # a frame whose instruments do different things has no single action label
        verbs = {v for _, v, _ in scene.triplets}
        return verbs.pop() if len(verbs) == 1 else MAIN_ACTION[scene.phase]
    if task == "triplet":  # the grasper's (in most phases) last: the first triplet is the one that tells frames apart
        return "; ".join(",".join(t) for t in sorted(scene.triplets, key=lambda t: t[0] == "grasper")) or "none"
    if task == "cvs":
        return "; ".join(f"C{k + 1}: {'yes' if c else 'no'}" for k, c in enumerate(scene.cvs))
    if task == "localization":
        return "; ".join(f"{n} [{b[0]:.2f}, {b[1]:.2f}, {b[2]:.2f}, {b[3]:.2f}]" for n, b in scene.boxes) or "none"
    raise ValueError(f"no warm-up answer for task {task!r}; expected one of {WARMUP_TASKS}")


def task_target(task: str, scene: Scene) -> str:
    """The whole answer. The phase prompt gets what a Cholec80 site trains on (L1 instruments, L3 phase), so
    site fine-tuning refines the layout the model already writes; the other prompts get all three levels (L1
    instruments and anatomy, L2 relations, L3 phase and CVS), as a site with triplet and CVS labels trains on."""
    tools = [tool_word(t) for t in scene.tools]
    if task == "phase":
        return hierarchical_target(scene.phase, tools)
    anatomy = [a for a in dict.fromkeys(t.replace("_", " ") for _, _, t in scene.triplets) if a not in tools]
    relation = "; ".join(" ".join(t).replace("_", " ") for t in sorted(scene.triplets)) or "none"
    return hierarchical_target(
        scene.phase, tools, relation, all(scene.cvs), anatomy=anatomy, answer=task_answer(task, scene)
    )
