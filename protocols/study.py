"""Study protocol schema: loaded from YAML, validated on load, content-hashed with its resolved tasks."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from protocols import __version__
from protocols.durations import parse_minutes
from protocols.errors import ConfigError, ProtocolError
from protocols.finetune import FinetunePlan, parse_finetune
from protocols.mapping import check_mapping, enum_value, integer, number
from protocols.tasks import TaskDefinition, load_task

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TASK = re.compile(r"[a-z][a-z0-9_]*")
MAX_DEADLINE_MINUTES = 366 * 24 * 60  # studies run for weeks; a deadline beyond a year is a typo


class StudyMode(str, Enum):
    EVALUATE = "evaluate"
    FINETUNE = "finetune"


class OutputLevel(str, Enum):
    """What granularity a protocol asks sites to release; only aggregates are ever allowed."""

    AGGREGATE = "aggregate"
    PER_VIDEO = "per_video"
    PER_FRAME = "per_frame"


def _in_range(value: Any, name: str, high: float) -> None:
    """A finite number in (0, high]; the stored value keeps its YAML type, so the protocol hash does not move."""
    if not 0 < number(value, name, error=ProtocolError) <= high:
        raise ProtocolError(f"{name} must be a number in (0, {high:g}], got {value!r}")


def _kind(value: Any, name: str, kind: type) -> None:
    if not isinstance(value, kind):
        raise ProtocolError(f"{name} must be a {kind.__name__}, got {type(value).__name__} ({value!r})")


@dataclass(frozen=True)
class TaskPlan:
    """One task of a study and how it is sampled and generated."""

    name: str
    sample_every_s: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TASK.fullmatch(self.name):
            raise ProtocolError(f"tasks: name must be a task name such as 'phase', got {self.name!r}")
        _in_range(self.sample_every_s, f"task {self.name}: sample_every_s", 3600)
        integer(self.max_new_tokens, f"task {self.name}: max_new_tokens", 1, 4096, ProtocolError)

    @property
    def definition(self) -> TaskDefinition:
        return load_task(self.name)


@dataclass(frozen=True)
class Privacy:
    min_videos: int = 5
    outputs: OutputLevel = OutputLevel.AGGREGATE
    bootstrap_replicates: int = 1000

    def __post_init__(self) -> None:
        # YAML `true` is 1: a boolean here would switch small-cell suppression off, so it is refused.
        integer(self.min_videos, "privacy.min_videos", 1, 1_000_000, ProtocolError)
        _kind(self.outputs, "privacy.outputs", OutputLevel)
        integer(self.bootstrap_replicates, "privacy.bootstrap_replicates", 100, 100_000, ProtocolError)


@dataclass(frozen=True)
class RoundPlan:
    mode: StudyMode = StudyMode.EVALUATE
    rounds: int = 1
    deadline_minutes: float = 60.0  # per round; written `deadline: 14d | 36h | 90m` in a protocol
    poll_seconds: float = 3.0
    finetune: dict[str, Any] = field(default_factory=dict)
    min_sites: int | None = None  # a round closes once this many sites delivered (None: every site)

    def __post_init__(self) -> None:
        _kind(self.mode, "round_plan.mode", StudyMode)
        integer(self.rounds, "round_plan.rounds", 1, 1000, ProtocolError)
        _in_range(self.deadline_minutes, "round_plan.deadline_minutes", MAX_DEADLINE_MINUTES)
        _in_range(self.poll_seconds, "round_plan.poll_seconds", 3600)
        _kind(self.finetune, "round_plan.finetune", dict)
        if self.min_sites is not None:
            integer(self.min_sites, "round_plan.min_sites", 1, 10_000, ProtocolError)
        if self.finetune and self.mode is not StudyMode.FINETUNE:
            raise ProtocolError(f"round_plan.finetune is set but round_plan.mode is {self.mode.value!r}")


@dataclass(frozen=True)
class StudyProtocol:
    """A validated study protocol; `content_hash` pins it between hub and sites."""

    study_id: str
    version: str
    title: str
    sites: tuple[str, ...]
    model_name: str
    model_sha256: str
    tasks: tuple[TaskPlan, ...]
    round_plan: RoundPlan
    privacy: Privacy
    finetune: FinetunePlan | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.study_id, str) or not _ID.fullmatch(self.study_id):
            raise ProtocolError(f"study.id must match {_ID.pattern}, got {self.study_id!r}")
        for name, value in (
            ("study.version", self.version),
            ("study.title", self.title),
            ("model.name", self.model_name),
        ):
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"{name} must be a non-empty string, got {value!r}")
        sites = self.sites
        if (
            not sites
            or not all(isinstance(x, str) and _ID.fullmatch(x) for x in sites)
            or len(set(sites)) != len(sites)
        ):
            raise ProtocolError(f"sites must be a non-empty list of unique site names, got {list(sites)!r}")
        if not isinstance(self.model_sha256, str) or not _SHA256.fullmatch(self.model_sha256):
            raise ProtocolError(f"model.manifest_sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}")
        if not self.tasks or not all(isinstance(t, TaskPlan) for t in self.tasks):
            raise ProtocolError(f"tasks must be a non-empty list of tasks, got {self.tasks!r}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ProtocolError(f"tasks: duplicate task names in {names}")
        _kind(self.round_plan, "round_plan", RoundPlan)
        _kind(self.privacy, "privacy", Privacy)
        quorum = self.round_plan.min_sites
        if quorum is not None and quorum > len(sites):
            raise ProtocolError(
                f"round_plan.min_sites must be an integer in [1, {len(sites)}] (the number of sites), got {quorum!r}"
            )
        if (self.finetune is None) == (self.round_plan.mode is StudyMode.FINETUNE):
            raise ProtocolError(
                f"round_plan.finetune is {'missing' if self.finetune is None else 'set'} "
                f"but round_plan.mode is {self.round_plan.mode.value!r}"
            )

    @property
    def round_numbers(self) -> range:
        """Evaluation studies: rounds 0..n-1. Fine-tuning: round 0 is the baseline, 1..n train then evaluate."""
        n = self.round_plan.rounds
        return range(n + 1) if self.finetune is not None else range(n)

    def role(self, site: str) -> str:
        if self.finetune is None:
            return "evaluate"
        return "train" if site in self.finetune.trainers else "held_out"

    def resolved(self) -> dict[str, Any]:
        """The fully resolved protocol (task definitions and prompts included) that the hash covers."""
        return {
            "study": {"id": self.study_id, "version": self.version, "title": self.title},
            "sites": list(self.sites),
            "model": {"name": self.model_name, "manifest_sha256": self.model_sha256},
            "tasks": [
                {
                    "plan": {"name": t.name, "sample_every_s": t.sample_every_s, "max_new_tokens": t.max_new_tokens},
                    "definition": t.definition.to_dict(),
                }
                for t in self.tasks
            ],
            "round_plan": {
                "mode": self.round_plan.mode.value,
                "rounds": self.round_plan.rounds,
                "deadline_minutes": self.round_plan.deadline_minutes,
                "poll_seconds": self.round_plan.poll_seconds,
                "min_sites": self.round_plan.min_sites,
                "finetune": self.finetune.to_dict() if self.finetune else None,
            },
            "privacy": {
                "min_videos": self.privacy.min_videos,
                "outputs": self.privacy.outputs.value,
                "bootstrap_replicates": self.privacy.bootstrap_replicates,
            },
            "package_version": __version__,
        }

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def bootstrap_seed(self) -> int:
        """Seeded from the protocol, so a rerun at a site gives the same CI bounds."""
        return int(self.content_hash[:8], 16)

    def task(self, name: str) -> TaskPlan:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ProtocolError(f"study {self.study_id} has no task {name!r}")


_TOP_KEYS = {"study", "sites", "model", "tasks", "round_plan", "privacy"}


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ProtocolError(f"missing required key {where + key!r}")
    return mapping[key]


def _version(study: dict[str, Any]) -> str:
    version = study.get("version")
    if not isinstance(version, (str, int, float)) or isinstance(version, bool) or str(version) == "":
        raise ProtocolError(f"study.version must be a string like '1.0', got {version!r}")
    return str(version)


def _task(entry: Any, i: int) -> TaskPlan:
    """A task entry: a bare task name, or a mapping with its sampling and generation settings."""
    if isinstance(entry, str):
        return TaskPlan(entry)
    raw = check_mapping(entry, f"tasks[{i}]", {f.name for f in fields(TaskPlan)}, ProtocolError)
    _require(raw, "name", f"tasks[{i}].")
    return TaskPlan(**raw)


def _round_plan(data: Any) -> RoundPlan:
    allowed = {f.name for f in fields(RoundPlan)} | {"deadline"}
    raw = dict(check_mapping(data, "round_plan", allowed, ProtocolError))
    if "deadline" in raw:
        if "deadline_minutes" in raw:
            raise ProtocolError("round_plan: give deadline (e.g. 14d) or deadline_minutes (older files), not both")
        minutes = parse_minutes(raw.pop("deadline"), "round_plan.deadline", ProtocolError)
        if minutes > MAX_DEADLINE_MINUTES:
            raise ProtocolError(f"round_plan.deadline must be at most 366d, got {data['deadline']!r}")
        raw["deadline_minutes"] = int(minutes) if minutes == int(minutes) else minutes
    if "mode" in raw:
        raw["mode"] = enum_value(StudyMode, raw["mode"], "round_plan.mode", ProtocolError)
    if raw.get("finetune", {}) is None:
        del raw["finetune"]
    return RoundPlan(**raw)


def _privacy(data: Any) -> Privacy:
    raw = dict(check_mapping(data, "privacy", {f.name for f in fields(Privacy)}, ProtocolError))
    if "outputs" in raw:
        raw["outputs"] = enum_value(OutputLevel, raw["outputs"], "privacy.outputs", ProtocolError)
    return Privacy(**raw)


def _parse(data: Any, source: str) -> StudyProtocol:
    check_mapping(data, "top level", _TOP_KEYS, ProtocolError)
    study = check_mapping(_require(data, "study", ""), "study", {"id", "version", "title"}, ProtocolError)
    model = check_mapping(_require(data, "model", ""), "model", {"name", "manifest_sha256"}, ProtocolError)
    sites, tasks_raw = _require(data, "sites", ""), _require(data, "tasks", "")
    _kind(sites, "sites", list)
    _kind(tasks_raw, "tasks", list)
    tasks = tuple(_task(t, i) for i, t in enumerate(tasks_raw))
    for t in tasks:
        t.definition  # noqa: B018 - loading validates the task name against protocols/tasks
    round_plan = _round_plan(data.get("round_plan", {}))
    finetune = None
    if round_plan.mode is StudyMode.FINETUNE:
        finetune = parse_finetune(round_plan.finetune, source)
        finetune.check_sites(sites, source)
    study_id = _require(study, "id", "study.")
    return StudyProtocol(
        study_id=study_id,
        version=_version(study),
        title=study.get("title", study_id),
        sites=tuple(sites),
        model_name=model.get("name", "surg-r1"),
        model_sha256=_require(model, "manifest_sha256", "model."),
        tasks=tasks,
        round_plan=round_plan,
        privacy=_privacy(data.get("privacy", {})),
        finetune=finetune,
    )


def parse_protocol(data: Any, source: str = "<protocol>") -> StudyProtocol:
    """Validate a protocol mapping; every error names `source`, the field, the value received and what was expected."""
    try:
        return _parse(data, source)
    except ConfigError as exc:  # an unknown or invalid task definition (protocols/tasks)
        raise ProtocolError(f"{source}: {exc}") from exc
    except ProtocolError as exc:
        if str(exc).startswith(f"{source}: "):  # parse_finetune names the source itself
            raise
        raise ProtocolError(f"{source}: {exc}") from exc


def load_protocol(path: Path) -> StudyProtocol:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol {path}: {exc.strerror}") from exc
    return loads_protocol(text, str(path))


def loads_protocol(text: str, source: str) -> StudyProtocol:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{source}: invalid YAML: {exc}") from exc
    return parse_protocol(data, source)
