"""Task definitions as data (labels, synonyms, prompt, answer grammar, metrics), validated on load."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from protocols.errors import ConfigError
from protocols.mapping import check_mapping


class AnswerKind(str, Enum):
    """The grammar of the final answer."""

    SINGLE_LABEL = "single_label"
    LABEL_SET = "label_set"
    YES_NO_SET = "yes_no_set"
    BOXES = "boxes"


class Scale(str, Enum):
    """How a metric is pooled: proportions on the logit scale, the rest as they are."""

    PROPORTION = "proportion"
    UNIT = "unit"


@dataclass(frozen=True)
class Label:
    name: str
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricSpec:
    name: str
    scale: Scale


@dataclass(frozen=True)
class TaskDefinition:
    """One task: what the model is asked, how its answer is read, and how it is scored."""

    name: str
    title: str
    answer_kind: AnswerKind
    labels: tuple[Label, ...]
    prompt: str
    metrics: tuple[MetricSpec, ...]
    headline: str  # what the task's table and forest plot lead with (when a site released it)
    extra: dict[str, Any] = field(default_factory=dict)
    headline_fallback: tuple[str, ...] = ()  # leads instead, in order, where the headline was not computed
    arena: str = ""  # the task's Arena Score component (the published definition); empty: the headline
    sensitivity: tuple[str, ...] = ()  # metrics also computed on parseable frames only, as <metric>_parseable

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"task name must be lower_snake_case, got {self.name!r}")
        names = [m.name for m in self.metrics]
        for role, metric in [("headline", self.headline), ("arena", self.arena_metric)] + [
            ("headline_fallback", m) for m in self.headline_fallback
        ]:
            if metric not in names:
                raise ConfigError(f"task {self.name}: {role} {metric!r} is not one of its metrics {names}")
        for metric in self.sensitivity:
            if metric not in names or f"{metric}_parseable" not in names:
                raise ConfigError(
                    f"task {self.name}: sensitivity metric {metric!r} needs both it and {metric}_parseable "
                    f"among its metrics {names}"
                )
        label_names = [lab.name for lab in self.labels]
        if len(set(label_names)) != len(label_names):
            raise ConfigError(f"task {self.name}: duplicate label names in {label_names}")
        if "{labels}" in self.prompt and not self.labels:
            raise ConfigError(f"task {self.name}: prompt lists {{labels}} but the task has none")

    @property
    def arena_metric(self) -> str:
        return self.arena or self.headline

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)

    def render_prompt(self) -> str:
        return self.prompt.replace("{labels}", ", ".join(self.label_names)).strip()

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise ConfigError(f"task {self.name} has no metric {name!r}; it has {[m.name for m in self.metrics]}")

    def to_dict(self) -> dict[str, Any]:
        """The resolved definition, as hashed into a protocol."""
        return {
            "name": self.name,
            "title": self.title,
            "answer_kind": self.answer_kind.value,
            "labels": [{"name": lab.name, "synonyms": list(lab.synonyms)} for lab in self.labels],
            "prompt": self.render_prompt(),
            "metrics": [{"name": m.name, "scale": m.scale.value} for m in self.metrics],
            "headline": self.headline,
            "headline_fallback": list(self.headline_fallback),
            "arena": self.arena_metric,
            "sensitivity": list(self.sensitivity),
            "extra": self.extra,
        }


_REQUIRED = ("name", "title", "answer_kind", "prompt", "metrics", "headline")


def parse_task(data: Any, source: str) -> TaskDefinition:
    """Validate a task mapping (from YAML); `source` names it in errors."""
    check_mapping(data, source, set(_REQUIRED) | {"labels", "extra", "headline_fallback", "arena", "sensitivity"})
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing keys {missing}")
    try:
        kind = AnswerKind(data["answer_kind"])
        metrics = tuple(MetricSpec(str(m["name"]), Scale(m["scale"])) for m in data["metrics"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid answer_kind or metrics: {exc}") from exc
    labels = tuple(
        Label(str(lab["name"]), tuple(str(s) for s in lab.get("synonyms", ()))) for lab in data.get("labels", ())
    )
    return TaskDefinition(
        name=str(data["name"]),
        title=str(data["title"]),
        answer_kind=kind,
        labels=labels,
        prompt=str(data["prompt"]),
        metrics=metrics,
        headline=str(data["headline"]),
        extra=dict(data.get("extra") or {}),
        headline_fallback=_names(data.get("headline_fallback"), source, "headline_fallback"),
        arena=str(data.get("arena") or ""),
        sensitivity=_names(data.get("sensitivity"), source, "sensitivity"),
    )


def _names(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key} must be a list of metric names, got {value!r}")
    return tuple(value)


def load_task_file(path: Path) -> TaskDefinition:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read task definition {path}: {exc}") from exc
    return parse_task(data, str(path))


@cache
def load_task(name: str) -> TaskDefinition:
    """A built-in task definition by name (protocols/tasks/NAME.yaml)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"invalid task name {name!r}")
    ref = resources.files("protocols.tasks").joinpath(f"{name}.yaml")
    if not ref.is_file():
        raise ConfigError(f"unknown task {name!r}; known tasks: {list(available_tasks())}")
    task = parse_task(yaml.safe_load(ref.read_text(encoding="utf-8")), f"protocols/tasks/{name}.yaml")
    if task.name != name:
        raise ConfigError(f"protocols/tasks/{name}.yaml defines task {task.name!r}")
    return task


def available_tasks() -> tuple[str, ...]:
    return tuple(
        sorted(
            p.name[: -len(".yaml")] for p in resources.files("protocols.tasks").iterdir() if p.name.endswith(".yaml")
        )
    )
