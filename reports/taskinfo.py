"""What the reports need to know about a task (headline metric, metric scales, title), from protocols or given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocols.errors import ConfigError
from protocols.tasks import Scale, load_task


@dataclass(frozen=True)
class TaskInfo:
    """A task as the reports see it; `scales` maps every metric name to how it is pooled."""

    headline: str
    scales: Mapping[str, Scale]
    title: str = ""
    in_arena: bool = True  # whether the headline joins the Arena Score
    fallback: tuple[str, ...] = ()  # leads the task's table instead, in order, where the headline is absent
    arena: str = ""  # the Arena Score component; empty: the headline
    sensitivity: tuple[str, ...] = ()  # metrics also released on parseable frames only (<metric>_parseable)

    def __post_init__(self) -> None:
        for metric in (self.headline, *self.fallback, self.arena_metric):
            if metric not in self.scales:
                raise ConfigError(f"headline metric {metric!r} is not one of the scales {list(self.scales)}")
        for name, scale in self.scales.items():
            if not isinstance(scale, Scale):
                raise ConfigError(f"metric {name!r}: expected a protocols.tasks.Scale, got {scale!r}")

    def scale(self, task: str, metric: str) -> Scale:
        try:
            return self.scales[metric]
        except KeyError:
            raise ConfigError(f"task {task!r} has no metric {metric!r}; expected one of {list(self.scales)}") from None

    @property
    def arena_metric(self) -> str:
        return self.arena or self.headline

    def lead(self, metrics: Iterable[str]) -> str:
        """The metric the task's table leads with: the headline, else the first fallback present."""
        present = set(metrics)
        return next((m for m in (self.headline, *self.fallback) if m in present), self.headline)

    def ordered(self, metrics: Iterable[str]) -> list[str]:
        """The given metrics, the leading one first, then in the task's own order."""
        present = set(metrics)
        lead = self.lead(present)
        order = [lead, *[m for m in self.scales if m != lead]]
        return [m for m in order if m in present]


def task_info(name: str) -> TaskInfo:
    """A TaskInfo from the built-in task definition; a ConfigError naming the task when it is unknown."""
    try:
        task = load_task(name)
    except ConfigError as exc:
        raise ConfigError(
            f"no task definition for task {name!r} ({exc}); pass tasks={{{name!r}: TaskInfo(...)}} explicitly"
        ) from exc
    return TaskInfo(
        headline=task.headline,
        scales={m.name: m.scale for m in task.metrics},
        title=task.title,
        fallback=task.headline_fallback,
        arena=task.arena_metric,
        sensitivity=task.sensitivity,
        in_arena=task.in_arena,
    )


def resolve_task_infos(names: Iterable[str], given: Mapping[str, TaskInfo] | None = None) -> dict[str, TaskInfo]:
    """One TaskInfo per task name: the given one when present, else the built-in definition."""
    given = given or {}
    return {name: given[name] if name in given else task_info(name) for name in names}
