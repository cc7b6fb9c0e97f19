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
from protocols.grpo import RewardKind
from protocols.mapping import check_mapping, enum_value


class AnswerKind(str, Enum):
    """The grammar of the final answer."""

    SINGLE_LABEL = "single_label"
    LABEL_SET = "label_set"
    YES_NO_SET = "yes_no_set"
    BOXES = "boxes"
    REASONING = "reasoning"  # no answer of its own: reads the reasoning of other tasks' answers


class Scale(str, Enum):
    """How a metric is pooled: proportions on the logit scale, the rest as they are."""

    PROPORTION = "proportion"
    UNIT = "unit"


_NAME = re.compile(r"[a-z][a-z0-9_]*")  # task and metric names travel in wire record names (metric.TASK.METRIC)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Label:
    name: str
    synonyms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _text(self.name, "label name")
        if not isinstance(self.synonyms, tuple):
            raise ConfigError(f"label {self.name}: synonyms must be a list, got {self.synonyms!r}")
        for synonym in self.synonyms:
            _text(synonym, f"label {self.name}: synonym")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    scale: Scale

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"metric name must be lower_snake_case, got {self.name!r}")
        if not isinstance(self.scale, Scale):
            raise ConfigError(f"metric {self.name}: scale must be a Scale, got {self.scale!r}")


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
    reward: RewardKind | None = None  # the GRPO reward that checks this task's answers against a frame's labels

    def __post_init__(self) -> None:
        if self.reward is not None and not isinstance(self.reward, RewardKind):
            raise ConfigError(f"task {self.name}: reward must be a RewardKind or absent, got {self.reward!r}")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"task name must be lower_snake_case, got {self.name!r}")
        for key in ("title", "prompt", "headline"):
            if key == "prompt" and self.answer_kind is AnswerKind.REASONING and self.prompt == "":
                continue  # it asks nothing: it reads the answers of other tasks
            _text(getattr(self, key), f"task {self.name}: {key}")
        if not isinstance(self.answer_kind, AnswerKind):
            raise ConfigError(f"task {self.name}: answer_kind must be an AnswerKind, got {self.answer_kind!r}")
        if not isinstance(self.labels, tuple) or not all(isinstance(lab, Label) for lab in self.labels):
            raise ConfigError(f"task {self.name}: labels must be a tuple of Label, got {self.labels!r}")
        if not self.metrics or not all(isinstance(m, MetricSpec) for m in self.metrics):
            raise ConfigError(
                f"task {self.name}: metrics must be a non-empty tuple of MetricSpec, got {self.metrics!r}"
            )
        if not isinstance(self.extra, dict):
            raise ConfigError(f"task {self.name}: extra must be a mapping, got {self.extra!r}")
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

    @property
    def in_arena(self) -> bool:
        """Whether its headline joins the Arena Score (recognition tasks do; `extra.arena: false` opts out)."""
        return bool(self.extra.get("arena", True))

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
            **({} if self.reward is None else {"reward": self.reward.value}),
        }


_REQUIRED = ("name", "title", "answer_kind", "prompt", "metrics", "headline")


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, got {type(value).__name__} ({value!r})")
    return value


def _label(data: Any, where: str) -> Label:
    raw = check_mapping(data, where, {"name", "synonyms"})
    if "name" not in raw:
        raise ConfigError(f"{where}: missing key 'name'")
    return Label(raw["name"], tuple(_list(raw.get("synonyms", []), f"{where}.synonyms")))


def _metric(data: Any, where: str) -> MetricSpec:
    raw = check_mapping(data, where, {"name", "scale"})
    missing = [k for k in ("name", "scale") if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}")
    return MetricSpec(raw["name"], enum_value(Scale, raw["scale"], f"{where}.scale"))


def parse_task(data: Any, source: str) -> TaskDefinition:
    """Validate a task mapping (from YAML); errors name `source`, the field, the value and what was expected."""
    check_mapping(
        data, source, set(_REQUIRED) | {"labels", "extra", "headline_fallback", "arena", "sensitivity", "reward"}
    )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing keys {missing}")
    try:
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"extra must be a mapping, got {type(extra).__name__} ({extra!r})")
        return TaskDefinition(
            name=data["name"],
            title=data["title"],
            answer_kind=enum_value(AnswerKind, data["answer_kind"], "answer_kind"),
            labels=tuple(_label(lab, f"labels[{i}]") for i, lab in enumerate(_list(data.get("labels", []), "labels"))),
            prompt=data["prompt"],
            metrics=tuple(_metric(m, f"metrics[{i}]") for i, m in enumerate(_list(data["metrics"], "metrics"))),
            headline=data["headline"],
            extra=dict(extra),
            headline_fallback=_names(data.get("headline_fallback"), source, "headline_fallback"),
            arena=data.get("arena") or "",
            sensitivity=_names(data.get("sensitivity"), source, "sensitivity"),
            reward=None if data.get("reward") is None else enum_value(RewardKind, data["reward"], "reward"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


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
