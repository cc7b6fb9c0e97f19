"""Label vocabularies: label text (names, synonyms, any case or spacing) to canonical names, triplets and boxes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocols.errors import ConfigError
from protocols.tasks import Label, TaskDefinition


def normalise(text: str) -> str:
    """'CalotTriangleDissection', 'calot triangle dissection' and "Calot's-triangle" all become the same key."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text.strip())
    return re.sub(r"[^a-z0-9]+", "", spaced.lower().replace("'s", ""))


class AliasIndex:
    """Normalised names and synonyms -> canonical names, for one vocabulary (a task's labels or a component)."""

    def __init__(self, labels: Sequence[Label]) -> None:
        self._index: dict[str, str] = {}
        for label in labels:
            for alias in (label.name, *label.synonyms):
                self._index.setdefault(normalise(alias), label.name)

    @classmethod
    def of(cls, task: TaskDefinition) -> AliasIndex:
        """The task's labels and their synonyms."""
        return cls(task.labels)

    @classmethod
    def from_data(cls, entries: Any, where: str) -> AliasIndex:
        """From a task's `extra` list of {name, synonyms} mappings."""
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
            raise ConfigError(f"{where}: expected a list of {{name, synonyms}} mappings, got {entries!r}")
        return cls([Label(str(e["name"]), tuple(str(s) for s in e.get("synonyms", ()))) for e in entries])

    def canonical(self, text: str) -> str | None:
        return self._index.get(normalise(text))

    def aliases(self) -> dict[str, str]:
        """Normalised alias -> canonical name."""
        return dict(self._index)

    def last_mentioned(self, text: str) -> str | None:
        """The name mentioned last in free text ('the box of the hook is'), the longest alias winning a tie."""
        key = normalise(text)
        hits = sorted(
            ((key.rfind(a) + len(a), len(a), n) for a, n in self._index.items() if len(a) >= 3 and a in key),
            reverse=True,
        )
        return hits[0][2] if hits else None


@dataclass(frozen=True)
class TripletVocabulary:
    """Instrument, verb and target aliases and the task's triplet names ('instrument,verb,target')."""

    instrument: AliasIndex
    verb: AliasIndex
    target: AliasIndex
    triplets: frozenset[str]

    @classmethod
    def of(cls, task: TaskDefinition) -> TripletVocabulary:
        comps = task.extra.get("components") or {}
        where = f"task {task.name}: extra.components"
        index = {k: AliasIndex.from_data(comps.get(k), f"{where}.{k}") for k in ("instrument", "verb", "target")}
        return cls(index["instrument"], index["verb"], index["target"], frozenset(task.label_names))

    def triplet(self, parts: Sequence[str]) -> str | None:
        if len(parts) != 3:
            return None
        i, v, t = self.instrument.canonical(parts[0]), self.verb.canonical(parts[1]), self.target.canonical(parts[2])
        name = f"{i},{v},{t}"
        return name if None not in (i, v, t) and name in self.triplets else None

    def from_tokens(self, tokens: Sequence[str]) -> str | None:
        """Split free words into instrument / verb / target; accepted only when exactly one split fits."""
        found = {
            self.triplet([" ".join(tokens[:a]), " ".join(tokens[a:b]), " ".join(tokens[b:])])
            for a in range(1, len(tokens) - 1)
            for b in range(a + 1, len(tokens))
        }
        found.discard(None)
        return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class LabelledBox:
    """A box in normalised xyxy (0-1 of the image width and height) with its canonical label."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2
