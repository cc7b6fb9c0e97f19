"""Map label text (names, synonyms, CamelCase or spaced, any case) to a task's canonical label names."""

from __future__ import annotations

import re

from protocols.tasks import TaskDefinition


def normalise(text: str) -> str:
    """'CalotTriangleDissection', 'calot triangle dissection' and "Calot's-triangle" all become the same key."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text.strip())
    return re.sub(r"[^a-z0-9]+", "", spaced.lower().replace("'s", ""))


class LabelMapper:
    def __init__(self, task: TaskDefinition) -> None:
        self.task = task
        self._index: dict[str, str] = {}
        for label in task.labels:
            for alias in (label.name, *label.synonyms):
                self._index.setdefault(normalise(alias), label.name)

    def canonical(self, text: str) -> str | None:
        return self._index.get(normalise(text))

    def aliases(self) -> dict[str, str]:
        return dict(self._index)
