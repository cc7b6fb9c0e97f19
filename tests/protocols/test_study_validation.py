"""Typed validation of study protocols and task definitions: every field refuses the wrong type, by name."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import yaml

from protocols.errors import ConfigError, ProtocolError
from protocols.study import Privacy, RoundPlan, TaskPlan, loads_protocol, parse_protocol
from protocols.tasks import parse_task

BASE = {
    "study": {"id": "ext-val", "version": "1.0", "title": "t"},
    "sites": ["a", "b"],
    "model": {"name": "m", "manifest_sha256": "ab" * 32},
    "tasks": [{"name": "phase", "sample_every_s": 2.0}],
    "round_plan": {"rounds": 1, "deadline_minutes": 5, "poll_seconds": 2},
    "privacy": {"min_videos": 5},
}
DELETE = object()


def patched(base: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # booleans are never integers (YAML `true` is 1: it would turn small-cell suppression off)
        ("privacy.min_videos", True, r"privacy\.min_videos must be an integer in \[1, 1000000\], got True"),
        ("privacy.min_videos", 2.5, r"privacy\.min_videos must be an integer .*, got 2\.5"),
        ("privacy.min_videos", "5", r"privacy\.min_videos must be an integer .*, got '5'"),
        ("privacy.min_videos", 0, r"privacy\.min_videos must be an integer in \[1, 1000000\], got 0"),
        ("privacy.bootstrap_replicates", False, r"privacy\.bootstrap_replicates must be an integer .*, got False"),
        ("privacy.bootstrap_replicates", 99, r"bootstrap_replicates must be an integer in \[100, 100000\], got 99"),
        ("privacy.outputs", "everything", r"privacy\.outputs must be one of \['aggregate', .*\], got 'everything'"),
        ("privacy.min_video", 5, r"privacy: unknown keys \['min_video'\]"),
        ("privacy", [5], "privacy must be a mapping, got list"),
        # round plan: a negative poll crashed later in time.sleep; an unknown key surfaced as a TypeError
        ("round_plan.poll_seconds", -1, r"round_plan\.poll_seconds must be a number in \(0, 3600\], got -1"),
        ("round_plan.poll_seconds", 0, r"round_plan\.poll_seconds must be a number in \(0, 3600\], got 0"),
        ("round_plan.poll_seconds", True, r"round_plan\.poll_seconds must be a finite number, got True"),
        ("round_plan.poll_seconds", float("nan"), r"round_plan\.poll_seconds must be a finite number, got nan"),
        ("round_plan.deadline_minutes", "60", r"round_plan\.deadline_minutes must be a finite number, got '60'"),
        ("round_plan.deadline_minutes", -5, r"round_plan\.deadline_minutes must be a number in \(0, .*\], got -5"),
        ("round_plan.rounds", True, r"round_plan\.rounds must be an integer in \[1, 1000\], got True"),
        ("round_plan.rounds", 2.0, r"round_plan\.rounds must be an integer .*, got 2\.0"),
        ("round_plan.mode", "train", r"round_plan\.mode must be one of \['evaluate', 'finetune'\], got 'train'"),
        ("round_plan.pol_seconds", 3, r"round_plan: unknown keys \['pol_seconds'\]"),
        ("round_plan.finetune", ["a"], r"round_plan\.finetune must be a dict, got list"),
        ("round_plan.finetune", {"trainers": ["a"], "local_steps": 1}, "finetune is set but round_plan.mode is 'eval"),
        ("round_plan", "fast", "round_plan must be a mapping, got str"),
        # tasks
        ("tasks", [{"name": "phase", "max_new_tokens": True}], r"max_new_tokens must be an integer .*, got True"),
        ("tasks", [{"name": "phase", "max_new_tokens": 1.5}], r"max_new_tokens must be an integer .*, got 1\.5"),
        ("tasks", [{"name": "phase", "sample_every_s": "2"}], r"sample_every_s must be a finite number, got '2'"),
        ("tasks", [{"name": "phase", "sample_every_s": 0}], r"sample_every_s must be a number in \(0, 3600\], got 0"),
        ("tasks", [{"name": "phase", "sample_every": 2}], r"tasks\[0\]: unknown keys \['sample_every'\]"),
        ("tasks", [{"sample_every_s": 2}], r"missing required key 'tasks\[0\]\.name'"),
        ("tasks", [7], r"tasks\[0\] must be a mapping, got int"),
        ("tasks", [{"name": True}], "name must be a task name such as 'phase', got True"),
        ("tasks", "phase", "tasks must be a list, got str"),
        ("tasks", [], "tasks must be a non-empty list"),
        ("tasks", ["phase", "phase"], r"duplicate task names in \['phase', 'phase'\]"),
        ("tasks", ["nosuchtask"], "unknown task 'nosuchtask'"),
        # study, sites, model
        ("study.title", 5, "study.title must be a non-empty string, got 5"),
        ("study.id", 5, "study.id must match .*, got 5"),
        ("study.version", True, "study.version must be a string like '1.0', got True"),
        ("study.id", DELETE, "missing required key 'study.id'"),
        ("study.owner", "x", r"study: unknown keys \['owner'\]"),
        ("model.name", ["m"], r"model\.name must be a non-empty string, got \['m'\]"),
        ("model.manifest_sha256", 123, "manifest_sha256 must be 64 lowercase hex digits, got 123"),
        ("model.manifest_sha256", DELETE, "missing required key 'model.manifest_sha256'"),
        ("sites", "a", "sites must be a list, got str"),
        ("sites", ["a", 3], r"sites must be a non-empty list of unique site names, got \['a', 3\]"),
        ("tasks", DELETE, "missing required key 'tasks'"),
        ("study", "x", "study must be a mapping, got str"),
    ],
)
def test_each_field_refuses_the_wrong_type_by_name(path: str, value: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse_protocol(patched(BASE, path, value), "study.yaml")
    assert str(info.value).startswith("study.yaml: ")
    assert "__init__" not in str(info.value) and "unexpected keyword" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("privacy: {min_videos: true}", "privacy.min_videos must be an integer .*, got True"),
        ("privacy: {min_videos: 2.5}", r"privacy.min_videos must be an integer .*, got 2\.5"),
        ("round_plan: {poll_seconds: -1}", r"round_plan.poll_seconds must be a number in \(0, 3600\], got -1"),
        ("round_plan: {rounds: 1, poll_second: 2}", r"round_plan: unknown keys \['poll_second'\]"),
    ],
)
def test_the_issue_s_yaml_is_refused_at_load(text: str, message: str) -> None:
    """The inputs that were accepted (or crashed) before, as YAML text through the real loader."""
    body = {k: v for k, v in BASE.items() if k not in ("privacy", "round_plan")}
    with pytest.raises(ProtocolError, match=message):
        loads_protocol(yaml.safe_dump(body) + text + "\n", "study.yaml")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("round_plan.poll_seconds", 0.5),
        ("round_plan.deadline_minutes", 2 * 24 * 60),  # deadlines of days
        ("privacy.min_videos", 1),
        ("study.version", 2),  # YAML numbers are read as version strings
        ("tasks", ["phase", {"name": "cvs", "max_new_tokens": 4096}]),
        ("round_plan.finetune", None),
    ],
)
def test_valid_values_still_load(path: str, value: object) -> None:
    parse_protocol(patched(BASE, path, value), "study.yaml")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Privacy(min_videos=True), "min_videos must be an integer"),
        (
            lambda: Privacy(outputs="aggregate"),  # type: ignore[arg-type]  # deliberately a str
            "privacy.outputs must be a OutputLevel, got str",
        ),
        (lambda: RoundPlan(poll_seconds=-1), "poll_seconds must be a number in"),
        (lambda: RoundPlan(rounds=False), "rounds must be an integer"),
        (
            lambda: RoundPlan(mode="evaluate"),  # type: ignore[arg-type]  # deliberately a str
            "round_plan.mode must be a StudyMode, got str",
        ),
        (lambda: TaskPlan("phase", max_new_tokens=True), "max_new_tokens must be an integer"),
    ],
)
def test_dataclasses_check_when_built_directly(build: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        build()


PHASE = yaml.safe_load(resources.files("protocols.tasks").joinpath("phase.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("answer_kind", "multi", r"answer_kind must be one of \['single_label', .*\], got 'multi'"),
        ("metrics", [{"name": "accuracy", "scale": "percent"}], r"metrics\[0\]\.scale must be one of .*'percent'"),
        ("metrics", [{"name": "Acc", "scale": "unit"}], "metric name must be lower_snake_case, got 'Acc'"),
        ("metrics", [{"name": "accuracy"}], r"metrics\[0\]: missing keys \['scale'\]"),
        ("metrics", {"accuracy": "proportion"}, "metrics must be a list, got dict"),
        ("labels", [{"name": "A", "synonyms": "a"}], r"labels\[0\]\.synonyms must be a list, got str"),
        ("labels", [{"name": 3}], "label name must be a non-empty string, got 3"),
        ("labels", [{"name": "A", "synonyms": [True]}], "label A: synonym must be a non-empty string, got True"),
        ("labels", [{"name": "A", "synonym": []}], r"labels\[0\]: unknown keys \['synonym'\]"),
        ("title", 5, "title must be a non-empty string, got 5"),
        ("prompt", ["x"], r"prompt must be a non-empty string, got \['x'\]"),
        ("extra", [1], r"extra must be a mapping, got list"),
        ("name", DELETE, r"missing keys \['name'\]"),
    ],
)
def test_task_definitions_refuse_the_wrong_type_by_name(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_task(patched(PHASE, path, value), "phase.yaml")
    assert str(info.value).startswith("phase.yaml")


def test_the_built_in_task_parses_unchanged() -> None:
    task = parse_task(PHASE, "phase.yaml")
    assert task.label_names[0] == "Preparation" and task.headline == "accuracy"
    assert re.search("Preparation, CalotTriangleDissection", task.render_prompt())
