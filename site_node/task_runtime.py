"""Per-task runtime: which labels a task reads, how its answers parse and how it is scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from protocols.errors import ConfigError
from protocols.tasks import TaskDefinition, load_task
from site_node.datasets.cholec80 import read_phase_file
from site_node.labels import LabelMapper
from site_node.metrics import phase as phase_metrics
from site_node.metrics.bootstrap import Estimate
from site_node.parsing import parse_single_label
from site_node.store import DataStore, VideoEntry

VideoPairs = Sequence[tuple[Sequence[Any], Sequence[Any]]]


class TaskRuntime(Protocol):
    task: TaskDefinition
    label_kind: str

    def load_labels(self, store: DataStore, video: VideoEntry) -> dict[int, Any]: ...

    def parse(self, answer: str) -> Any: ...

    def summarise(self, videos: VideoPairs, *, seed: int, replicates: int) -> dict[str, Estimate]: ...


@dataclass
class PhaseRuntime:
    task: TaskDefinition
    label_kind: str = "phase"

    def __post_init__(self) -> None:
        self._mapper = LabelMapper(self.task)

    def load_labels(self, store: DataStore, video: VideoEntry) -> dict[int, Any]:
        return dict(read_phase_file(store.path(video.labels[self.label_kind]), self.task))

    def parse(self, answer: str) -> str | None:
        return parse_single_label(answer, self._mapper)

    def summarise(self, videos: VideoPairs, *, seed: int, replicates: int) -> dict[str, Estimate]:
        return phase_metrics.summarise(videos, seed=seed, replicates=replicates)


_FACTORIES: dict[str, Callable[[TaskDefinition], TaskRuntime]] = {"phase": PhaseRuntime}


def runtime_for(task_name: str) -> TaskRuntime:
    try:
        factory = _FACTORIES[task_name]
    except KeyError:
        raise ConfigError(f"this site node cannot run task {task_name!r}; it runs {sorted(_FACTORIES)}") from None
    return factory(load_task(task_name))
