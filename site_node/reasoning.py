"""Read Surg-R1's reasoning levels (L1 instruments and anatomy, L2 relations, L3 phase and CVS) from an answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from protocols.tasks import TaskDefinition
from site_node.labels import AliasIndex, TripletVocabulary, normalise

_THINK = re.compile(r"<\s*think\s*>(.*?)(?:<\s*/\s*think\s*>|<\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)
_LEVEL = re.compile(r"\bL([123])\s*(?:\([^)]*\))?\s*:", re.IGNORECASE)
_CVS = re.compile(r"(?:critical\s+view\s+of\s+safety|\bcvs\b)\s*(?:is\s+)?(not\s+)?(?:achieved|met|reached)", re.I)
_NOTHING = {"none", "nothing", "noinstrument", "noinstruments", "noaction", "noactions", "norelation", "idle"}
_FILLER = {"the", "a", "an", "is", "are", "on", "of", "with", "to", "and", "its", "at"}


@dataclass(frozen=True)
class Levels:
    """What an answer's reasoning states; None where a level is missing or cannot be read (never a guess)."""

    instruments: frozenset[str] | None  # L1, canonical instrument names
    anatomy: frozenset[str] | None  # L1, canonical target names (anatomy, specimen bag)
    relations: frozenset[str] | None  # L2, canonical triplets 'instrument,verb,target'
    phase: str | None  # L3, the phase it names (None: names none, or several)
    cvs: bool | None  # L3, the critical-view-of-safety state it states
    l3_read: bool  # L3 present and naming a phase or a CVS state

    @property
    def valid(self) -> bool:
        """All three levels present and readable."""
        return self.instruments is not None and self.relations is not None and self.l3_read


def split_levels(text: str) -> dict[int, str]:
    """Level number -> its text, from the <think> block (or the whole answer when there is none)."""
    found = _THINK.findall(text)
    body = found[0] if found else text
    marks = list(_LEVEL.finditer(body))
    out: dict[int, str] = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(body)
        out.setdefault(int(m.group(1)), body[m.end() : end].strip().rstrip("."))
    return out


def _items(text: str) -> list[str]:
    return [i.strip(" .") for i in re.split(r"[,;\n]+|\band\b", text) if i.strip(" .")]


def _words(text: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # CamelCase names, as labels.normalise reads them
    return re.findall(r"[a-z0-9]+", spaced.lower().replace("'s", ""))


class Names(Protocol):
    """A vocabulary that maps any spelling of a name or synonym to its canonical name (AliasIndex)."""

    def canonical(self, text: str) -> str | None: ...


def mentions(text: str, *indexes: Names, longest: int = 4) -> list[set[str]]:
    """Per index, the names mentioned as whole words; the longest alias wins at each place, the first index on a
    tie, and no word counts twice ('bipolar forceps' is the bipolar, not also a 'forceps' grasper)."""
    words, found = _words(text), [set[str]() for _ in indexes]
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            key = "".join(words[i : i + n])
            hit = next(((k, name) for k, ix in enumerate(indexes) if (name := ix.canonical(key)) is not None), None)
            if hit is not None:
                found[hit[0]].add(hit[1])
                i += n
                break
        else:
            i += 1
    return found


@dataclass(frozen=True)
class ReasoningReader:
    """Reads levels with the task definitions' vocabularies and synonyms (instruments, targets, phases)."""

    vocab: TripletVocabulary
    phases: AliasIndex

    @classmethod
    def of(cls, triplet_task: TaskDefinition, phase_task: TaskDefinition) -> ReasoningReader:
        return cls(TripletVocabulary.of(triplet_task), AliasIndex.of(phase_task))

    def l1(self, text: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """(instruments, anatomy) named in L1; 'no instrument' is empty; None when it names nothing readable."""
        instruments, anatomy = mentions(text, self.vocab.instrument, self.vocab.target)
        anatomy.discard("null_target")
        if not instruments and not anatomy and not all(normalise(i) in _NOTHING for i in _items(text) or ["?"]):
            return None
        return frozenset(instruments), frozenset(anatomy)

    def l2(self, text: str) -> frozenset[str] | None:
        """Triplets stated in L2 ('grasper retract gallbladder; hook dissect cystic duct'); None if one is unread."""
        if normalise(text) in _NOTHING:
            return frozenset()
        out = set()
        for item in [i for i in re.split(r"[;\n]+", text) if i.strip(" .,")]:
            parts = [p for p in item.split(",") if p.strip()]
            name = self.vocab.triplet([p.strip() for p in parts]) if len(parts) == 3 else None
            if name is None:
                tokens = [w for w in re.split(r"[\s\-/,]+", item.strip(" .")) if w and w.lower() not in _FILLER]
                name = self.vocab.from_tokens(tokens)
            if name is None:
                return None
            out.add(name)
        return frozenset(out)

    def l3(self, text: str) -> tuple[str | None, bool | None]:
        """(phase, CVS achieved) named in L3; a phase only when exactly one is named."""
        cvs_match = _CVS.search(text)
        cvs = None if cvs_match is None else cvs_match.group(1) is None
        (phases,) = mentions(_CVS.sub(" ", text), self.phases)
        return (phases.pop() if len(phases) == 1 else None), cvs

    def read(self, text: str) -> Levels:
        levels = split_levels(text)
        l1 = self.l1(levels[1]) if 1 in levels else None
        l2 = self.l2(levels[2]) if 2 in levels else None
        phase, cvs = self.l3(levels[3]) if 3 in levels else (None, None)
        return Levels(
            instruments=None if l1 is None else l1[0],
            anatomy=None if l1 is None else l1[1],
            relations=l2,
            phase=phase,
            cvs=cvs,
            l3_read=phase is not None or cvs is not None,
        )
