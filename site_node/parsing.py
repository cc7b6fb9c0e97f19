"""Answer parser: the final-answer tag, then common variants; what cannot be read is None, never a guess."""

from __future__ import annotations

import re

from site_node.labels import AliasIndex, normalise

_TAGGED = re.compile(r"<\s*answer\s*>(.*?)(?:<\s*/\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)
_PREFIXED = re.compile(r"(?:final\s+answer|answer|phase)\s*[:=-]\s*(.+)", re.IGNORECASE)
_THINK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", re.IGNORECASE | re.DOTALL)


def answer_span(text: str) -> str | None:
    """The text the model gave as its final answer, or None when it gave none."""
    tagged = _TAGGED.findall(text)
    if tagged:
        return tagged[-1].strip()
    rest = _THINK.sub(" ", text).strip()
    prefixed = _PREFIXED.findall(rest)
    if prefixed:
        return prefixed[-1].strip().splitlines()[0]
    return rest or None


def parse_single_label(text: str, mapper: AliasIndex) -> str | None:
    """One canonical label, or None when the answer is missing, unknown or names several labels."""
    span = answer_span(text)
    if span is None:
        return None
    span = span.strip().strip(".;:,\"'`*").strip()
    exact = mapper.canonical(span)
    if exact is not None:
        return exact
    # Without an exact match, accept the span only if it mentions exactly one label (by any alias).
    key = normalise(span)
    found = {name for alias, name in mapper.aliases().items() if len(alias) >= 4 and alias in key}
    return found.pop() if len(found) == 1 else None
