"""Answer parsers for label sets, yes/no criteria and boxes; what cannot be read is None, never a guess."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from protocols.errors import ConfigError
from protocols.tasks import TaskDefinition
from site_node.labels import AliasIndex, LabelledBox, TripletVocabulary, normalise
from site_node.parsing import answer_span

_NONE_WORDS = {"none", "nothing", "empty", "notriplet", "notriplets", "noinstrument", "noinstruments", "noboxes"}
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# Four numbers, optionally bracketed as [x1, y1, x2, y2], (x1, y1, x2, y2) or (x1, y1), (x2, y2).
_BOX = re.compile(
    rf"[\[(]?\s*({_NUM})\s*[,;]\s*({_NUM})\s*[\])]?\s*[,;]?\s*[\[(]?\s*({_NUM})\s*[,;]\s*({_NUM})\s*[\])]?"
)
_BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box", "coordinates", "xyxy")
_LABEL_KEYS = ("label", "name", "category", "class", "instrument")


def _span(text: str) -> str | None:
    span = answer_span(text)
    if span is None:
        return None
    span = span.strip().strip(".").strip()
    return span or None


def _is_none(span: str) -> bool:
    return normalise(span) in _NONE_WORDS


# -- label sets (triplets) ----------------------------------------------------------------------------------


def _triplet_items(span: str) -> list[list[str]] | None:
    """Items of a triplet answer: JSON lists/objects, parenthesised groups, or ';'-separated text."""
    if span[:1] in "[{":
        try:
            data = json.loads(span)
        except json.JSONDecodeError:
            data = None
        if data is not None:
            items: list[list[str]] = []
            for x in data if isinstance(data, list) else [data]:
                if isinstance(x, dict):
                    items.append([str(x.get(k, "")) for k in ("instrument", "verb", "target")])
                elif isinstance(x, list):
                    items.append([str(p) for p in x])
                else:
                    return None
            return items
    groups = re.findall(r"[(\[{<]([^()\[\]{}<>]*)[)\]}>]", span)
    raw = groups if groups else re.split(r"[;\n|]+", span)
    return [[p for p in re.split(r"\s*,\s*", r.strip()) if p] for r in raw if r.strip().strip(".,")]


def parse_label_set(text: str, vocab: TripletVocabulary) -> frozenset[str] | None:
    """The set of canonical triplets; an explicit 'none' is the empty set; any unreadable item fails the answer."""
    span = _span(text)
    if span is None:
        return None
    if _is_none(span):
        return frozenset()
    items = _triplet_items(span)
    if not items:
        return None
    out = set()
    for parts in items:
        name = vocab.triplet(parts) if len(parts) == 3 else None
        if name is None:
            name = vocab.from_tokens([w for p in parts for w in re.split(r"[\s\-/]+", p) if w])
        if name is None:
            return None
        out.add(name)
    return frozenset(out)


# -- yes/no criteria (CVS) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class YesNoGrammar:
    """Criterion aliases and the words that mean yes or no."""

    criteria: AliasIndex
    names: tuple[str, ...]
    words: tuple[tuple[str, bool], ...]  # (normalised phrase, value), longest first

    @classmethod
    def of(cls, task: TaskDefinition) -> YesNoGrammar:
        yes, no = task.extra.get("yes_words"), task.extra.get("no_words")
        if not (isinstance(yes, list) and isinstance(no, list) and all(isinstance(w, str) for w in yes + no)):
            raise ConfigError(f"task {task.name}: extra.yes_words and extra.no_words must be lists of quoted strings")
        words = [(normalise(str(w)), True) for w in yes] + [(normalise(str(w)), False) for w in no]
        return cls(AliasIndex.of(task), task.label_names, tuple(sorted(words, key=lambda w: -len(w[0]))))

    def value(self, item: str) -> tuple[str, bool] | None:
        """(key text, value) when the item ends with a yes/no word."""
        words = item.split()
        for n in range(min(3, len(words)), 0, -1):
            tail = normalise(" ".join(words[-n:]))
            for phrase, val in self.words:
                if tail == phrase:
                    return " ".join(words[:-n]).strip(" :=-"), val
        return None


def parse_yes_no(text: str, grammar: YesNoGrammar) -> tuple[bool, ...] | None:
    """One bool per criterion, in the task's order; every criterion must be answered exactly once."""
    span = _span(text)
    if span is None:
        return None
    flat = re.sub(r"[{}\[\]\"'`*]", " ", span)
    flat = re.sub(r"\s*[:=]\s*", " ", flat)
    items = [i.strip() for i in re.split(r"[;,\n|]+", flat) if i.strip()]
    read = [grammar.value(i) for i in items]
    if not items or any(r is None for r in read):
        return None
    pairs = [r for r in read if r is not None]
    if all(not key for key, _ in pairs):  # bare 'yes, no, no' in the grammar's order
        return tuple(v for _, v in pairs) if len(pairs) == len(grammar.names) else None
    answers: dict[str, bool] = {}
    for key, val in pairs:
        name = grammar.criteria.canonical(key)
        if name is None or name in answers:
            return None
        answers[name] = val
    return tuple(answers[n] for n in grammar.names) if set(answers) == set(grammar.names) else None


# -- boxes -----------------------------------------------------------------------------------------------------


def _json_boxes(span: str) -> list[tuple[str, list[float]]] | None:
    try:
        data = json.loads(span)
    except json.JSONDecodeError:
        return None
    data = data if isinstance(data, list) else [data]
    out = []
    for item in data:
        if not isinstance(item, dict):
            return None
        box = next((item[k] for k in _BOX_KEYS if k in item), None)
        label = next((item[k] for k in _LABEL_KEYS if k in item), None)
        if not (isinstance(box, list) and len(box) == 4 and isinstance(label, str)):
            return None
        try:
            out.append((label, [float(v) for v in box]))
        except (TypeError, ValueError):
            return None
    return out


def _text_boxes(span: str) -> list[tuple[str, list[float]]]:
    out, start = [], 0
    for match in _BOX.finditer(span):
        out.append((span[start : match.start()], [float(g) for g in match.groups()]))
        start = match.end()
    if span[start:].strip(" ;,.\n"):
        out.append((span[start:], []))  # trailing text without a box: unreadable
    return out


def _normalised(values: list[float], size: tuple[int, int] | None, pixel: bool) -> list[float] | None:
    if len(values) != 4:
        return None
    if pixel:  # pixels: only with the size of the image the model saw, never assumed
        if size is None:
            return None
        w, h = size
        values = [values[0] / w, values[1] / h, values[2] / w, values[3] / h]
    x1, y1, x2, y2 = values
    ok = 0.0 <= x1 < x2 <= 1.0 + 1e-6 and 0.0 <= y1 < y2 <= 1.0 + 1e-6
    return [x1, y1, min(x2, 1.0), min(y2, 1.0)] if ok else None


def parse_boxes(text: str, labels: AliasIndex, size: tuple[int, int] | None = None) -> list[LabelledBox] | None:
    """Labelled boxes in normalised xyxy; pixel boxes need `size` (width, height); 'none' is no boxes."""
    span = _span(text)
    if span is None:
        return None
    if _is_none(span):
        return []
    raw = _json_boxes(span) if span[:1] in "[{" else None
    raw = raw if raw is not None else _text_boxes(span)
    if not raw:
        return None
    pixel = any(max(v, default=0.0) > 1.0 for _, v in raw)  # one reading for the whole answer
    boxes = []
    for label_text, vals in raw:
        name = labels.canonical(label_text.strip(" ;,:=-\"'\n")) or labels.last_mentioned(label_text)
        norm = _normalised(vals, size, pixel)
        if name is None or norm is None:
            return None
        boxes.append(LabelledBox(name, *norm))
    return boxes
