"""Warm-up targets: every task's answer reads back, through the site's own parsers, as what the scene shows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from protocols.tasks import load_task
from site_node.reasoning import ReasoningReader
from site_node.synthetic import render
from site_node.synthetic.formats import SCENE_TRIPLETS
from site_node.synthetic.warmup_targets import (
    WARMUP_TASKS,
    WARMUP_WEIGHTS,
    Scene,
    render_scenes,
    task_answer,
    task_mix,
    task_target,
)
from site_node.task_runtime import Answer, runtime_for

READER = ReasoningReader.of(load_task("triplet"), load_task("phase"))


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    phases = [k % len(render.phase_names()) for k in range(140)]
    return render_scenes(phases, np.random.default_rng(7), frames_per_scene=35)[1]


def test_scenes_hold_what_the_label_writers_would_write(scenes: list[Scene]) -> None:
    assert {s.phase for s in scenes} == set(render.phase_names())
    for s in scenes:
        acting = {t.lower() for t in s.tools if t in SCENE_TRIPLETS[s.phase]}
        assert {i for i, _, _ in s.triplets} == acting
        assert {n for n, _ in s.boxes} <= acting and "specimenbag" not in {n for n, _ in s.boxes}
        for _, (x1, y1, x2, y2) in s.boxes:
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        if s.phase == "Preparation":
            assert s.cvs == (False, False, False)


def test_every_task_answer_parses_as_the_scene(scenes: list[Scene]) -> None:
    for s in scenes:
        for task in WARMUP_TASKS:
            rt = runtime_for(task)
            parsed = rt.parse(Answer(task_target(task, s), size=(render.W, render.H)))
            assert parsed is not None, (task, task_target(task, s))
            if task == "triplet":
                assert parsed == frozenset(",".join(t) for t in s.triplets)
            elif task == "cvs":
                assert parsed == s.cvs
            elif task == "localization":
                assert {b.label for b in parsed} == {n for n, _ in s.boxes}
            else:
                assert parsed == task_answer(task, s)


def test_reasoning_levels_read_back(scenes: list[Scene]) -> None:
    for s in scenes:
        phase_levels = READER.read(task_target("phase", s))  # what a Cholec80 site trains on: no L2
        assert phase_levels.phase == s.phase and phase_levels.relations is None
        for task in WARMUP_TASKS[1:]:
            levels = READER.read(task_target(task, s))
            assert levels.valid and levels.phase == s.phase and levels.cvs == all(s.cvs), task_target(task, s)
            assert levels.instruments == {t.lower() for t in s.tools if t != "SpecimenBag"}
            assert levels.relations == {",".join(t) for t in s.triplets}
            bag = {"specimen_bag"} if "SpecimenBag" in s.tools else set()  # a tool in Cholec80, a target in L1
            assert levels.anatomy == {t for _, _, t in s.triplets} | bag


def test_task_mix_keeps_the_shares_and_asks_actions_only_where_one_is_right(scenes: list[Scene]) -> None:
    tasks = task_mix(scenes, np.random.default_rng(0))
    counts = Counter(tasks)
    share = {t: w / sum(WARMUP_WEIGHTS) for t, w in zip(WARMUP_TASKS, WARMUP_WEIGHTS, strict=True)}
    for t in WARMUP_TASKS:
        assert abs(counts[t] / len(scenes) - share[t]) < 0.02, counts
    for t, s in zip(tasks, scenes, strict=True):
        if t == "action":
            assert len({v for _, v, _ in s.triplets}) == 1
