"""Study protocol schema: loaded from YAML, validated on load, content-hashed with its resolved tasks."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from protocols import __version__
from protocols.errors import ProtocolError
from protocols.finetune import FinetunePlan, parse_finetune
from protocols.mapping import check_mapping
from protocols.tasks import TaskDefinition, load_task

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StudyMode(str, Enum):
    EVALUATE = "evaluate"
    FINETUNE = "finetune"


class OutputLevel(str, Enum):
    """What granularity a protocol asks sites to release; only aggregates are ever allowed."""

    AGGREGATE = "aggregate"
    PER_VIDEO = "per_video"
    PER_FRAME = "per_frame"


@dataclass(frozen=True)
class TaskPlan:
    """One task of a study and how it is sampled and generated."""

    name: str
    sample_every_s: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.sample_every_s <= 3600:
            raise ProtocolError(f"task {self.name}: sample_every_s must be in (0, 3600], got {self.sample_every_s}")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ProtocolError(f"task {self.name}: max_new_tokens must be in [1, 4096], got {self.max_new_tokens}")

    @property
    def definition(self) -> TaskDefinition:
        return load_task(self.name)


@dataclass(frozen=True)
class Privacy:
    min_videos: int = 5
    outputs: OutputLevel = OutputLevel.AGGREGATE
    bootstrap_replicates: int = 1000

    def __post_init__(self) -> None:
        if self.min_videos < 1:
            raise ProtocolError(f"privacy.min_videos must be >= 1, got {self.min_videos}")
        if not 100 <= self.bootstrap_replicates <= 100_000:
            raise ProtocolError(
                f"privacy.bootstrap_replicates must be in [100, 100000], got {self.bootstrap_replicates}"
            )


@dataclass(frozen=True)
class RoundPlan:
    mode: StudyMode = StudyMode.EVALUATE
    rounds: int = 1
    deadline_minutes: float = 60.0
    poll_seconds: float = 3.0
    finetune: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ProtocolError(f"round_plan.rounds must be >= 1, got {self.rounds}")
        if self.deadline_minutes <= 0:
            raise ProtocolError(f"round_plan.deadline_minutes must be > 0, got {self.deadline_minutes}")


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


def _require(mapping: Any, key: str, source: str, kind: type) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ProtocolError(f"{source}: missing required key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise ProtocolError(f"{source}: {key!r} must be {kind.__name__}, got {type(value).__name__} ({value!r})")
    return value


def _version(study: dict[str, Any], source: str) -> str:
    version = study.get("version")
    if not isinstance(version, (str, int, float)) or isinstance(version, bool) or str(version) == "":
        raise ProtocolError(f"{source}: study.version must be a string like '1.0', got {version!r}")
    return str(version)


def parse_protocol(data: Any, source: str = "<protocol>") -> StudyProtocol:
    """Validate a protocol mapping; every error names `source` and the offending value."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{source}: expected a mapping at top level, got {type(data).__name__}")
    check_mapping(data, source, _TOP_KEYS, ProtocolError)
    study = _require(data, "study", source, dict)
    check_mapping(study, f"{source}: study", {"id", "version", "title"}, ProtocolError)
    study_id = str(_require(study, "id", f"{source}: study", str))
    if not _ID.fullmatch(study_id):
        raise ProtocolError(f"{source}: study.id {study_id!r} must match {_ID.pattern}")
    sites = _require(data, "sites", source, list)
    if not sites or not all(isinstance(s, str) and _ID.fullmatch(s) for s in sites) or len(set(sites)) != len(sites):
        raise ProtocolError(f"{source}: sites must be a non-empty list of unique site names, got {sites!r}")
    model = _require(data, "model", source, dict)
    check_mapping(model, f"{source}: model", {"name", "manifest_sha256"}, ProtocolError)
    sha = str(_require(model, "manifest_sha256", f"{source}: model", str))
    if not _SHA256.fullmatch(sha):
        raise ProtocolError(f"{source}: model.manifest_sha256 must be 64 lowercase hex digits, got {sha!r}")
    tasks_raw = _require(data, "tasks", source, list)
    if not tasks_raw:
        raise ProtocolError(f"{source}: tasks must not be empty")
    try:
        tasks = tuple(TaskPlan(**(t if isinstance(t, dict) else {"name": t})) for t in tasks_raw)
        for t in tasks:
            t.definition  # noqa: B018 - loading validates the task name against protocols/tasks
        round_plan = RoundPlan(
            **{**data.get("round_plan", {}), "mode": StudyMode(data.get("round_plan", {}).get("mode", "evaluate"))}
        )
        priv = dict(data.get("privacy", {}))
        privacy = Privacy(**{**priv, "outputs": OutputLevel(priv.get("outputs", "aggregate"))})
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{source}: {exc}") from exc
    except Exception as exc:  # ConfigError from an unknown task
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"{source}: {exc}") from exc
    if len({t.name for t in tasks}) != len(tasks):
        raise ProtocolError(f"{source}: duplicate task names in {[t.name for t in tasks]}")
    finetune = None
    if round_plan.mode is StudyMode.FINETUNE:
        finetune = parse_finetune(round_plan.finetune, source)
        finetune.check_sites(sites, source)
    elif round_plan.finetune:
        raise ProtocolError(f"{source}: round_plan.finetune is set but round_plan.mode is {round_plan.mode.value!r}")
    return StudyProtocol(
        study_id=study_id,
        version=_version(study, source),
        title=str(study.get("title", study_id)),
        sites=tuple(sites),
        model_name=str(model.get("name", "surg-r1")),
        model_sha256=sha,
        tasks=tasks,
        round_plan=round_plan,
        privacy=privacy,
        finetune=finetune,
    )


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
