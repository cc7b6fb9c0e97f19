"""Recorder overlay rules as data: which devices burn text into pixels, where, and how it is masked."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.errors import ConfigError, DeidError
from protocols.mapping import check_mapping

Box = tuple[float, float, float, float]
PixelBox = tuple[int, int, int, int]

_MATCH_KEYS = {"manufacturer", "model", "width", "height", "metadata"}
_RULE_KEYS = {"name", "match", "burned_in", "regions"}


@dataclass(frozen=True)
class DeviceFacts:
    """What is known about the device that made a file, read before any metadata is removed."""

    width: int
    height: int
    manufacturer: str = ""
    model: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecorderRule:
    """One device: how to recognise it, whether it burns in annotations, which boxes to mask."""

    name: str
    manufacturer: re.Pattern[str] | None
    model: re.Pattern[str] | None
    width: int | None
    height: int | None
    metadata: tuple[tuple[str, re.Pattern[str]], ...]
    burned_in: bool
    regions: tuple[Box, ...]

    def matches(self, facts: DeviceFacts) -> bool:
        if self.width is not None and facts.width != self.width:
            return False
        if self.height is not None and facts.height != self.height:
            return False
        if self.manufacturer is not None and not self.manufacturer.fullmatch(facts.manufacturer.strip()):
            return False
        if self.model is not None and not self.model.fullmatch(facts.model.strip()):
            return False
        meta = {k.lower(): v for k, v in facts.metadata.items()}
        return all(k in meta and rx.fullmatch(meta[k].strip()) for k, rx in self.metadata)


@dataclass(frozen=True)
class MaskPlan:
    """The boxes to black out on every frame of one file, in pixels, and the rules they came from."""

    boxes: tuple[PixelBox, ...] = ()
    rules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.boxes)


def _regex(value: Any, where: str) -> re.Pattern[str]:
    try:
        return re.compile(str(value), re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression {value!r}: {exc}") from exc


def _box(value: Any, where: str) -> Box:
    if not (isinstance(value, list | tuple) and len(value) == 4):
        raise ConfigError(f"{where}: a region is [x0, y0, x1, y1] as fractions, got {value!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: region values must be numbers, got {value!r}") from exc
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ConfigError(f"{where}: region {value!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return (x0, y0, x1, y1)


def parse_rule(data: Any, where: str) -> RecorderRule:
    """Validate one recorder rule mapping; `where` names the file and position in errors."""
    check_mapping(data, f"{where}: a recorder rule", _RULE_KEYS)
    name = str(data.get("name") or "").strip()
    if not name:
        raise ConfigError(f"{where}: a recorder rule needs a name")
    match = data.get("match") or {}
    if not isinstance(match, dict) or not match:
        raise ConfigError(f"{where} ({name}): `match` must be a non-empty mapping of {sorted(_MATCH_KEYS)}")
    bad = sorted(set(match) - _MATCH_KEYS)
    if bad:
        raise ConfigError(f"{where} ({name}): unknown match keys {bad}; expected {sorted(_MATCH_KEYS)}")
    meta = match.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{where} ({name}): match.metadata must be a mapping of tag -> regex")
    regions = tuple(_box(r, f"{where} ({name})") for r in (data.get("regions") or ()))
    burned_in = data.get("burned_in", False)
    if not isinstance(burned_in, bool):
        raise ConfigError(f"{where} ({name}): burned_in must be true or false, got {burned_in!r}")
    return RecorderRule(
        name=name,
        manufacturer=_regex(match["manufacturer"], where) if "manufacturer" in match else None,
        model=_regex(match["model"], where) if "model" in match else None,
        width=int(match["width"]) if "width" in match else None,
        height=int(match["height"]) if "height" in match else None,
        metadata=tuple((str(k).lower(), _regex(v, where)) for k, v in meta.items()),
        burned_in=burned_in,
        regions=regions,
    )


def parse_rules(data: Any, source: str) -> tuple[RecorderRule, ...]:
    """Validate a `recorders:` list."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"{source}: `recorders` must be a list of rules, got {type(data).__name__}")
    rules = tuple(parse_rule(item, f"{source}: recorders[{i}]") for i, item in enumerate(data))
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate recorder names {dupes}")
    return rules


def _to_pixels(box: Box, width: int, height: int) -> PixelBox:
    # Round outwards so a box never leaves a sliver of text unmasked.
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 * width),
        math.floor(y0 * height),
        min(width, math.ceil(x1 * width)),
        min(height, math.ceil(y1 * height)),
    )


def plan_masks(rules: tuple[RecorderRule, ...], facts: DeviceFacts, *, burned_in_flag: bool = False) -> MaskPlan:
    """The mask for one file; raises DeidError where pixels carry a known overlay that no rule masks."""
    matched = [r for r in rules if r.matches(facts)]
    boxes = tuple(_to_pixels(b, facts.width, facts.height) for r in matched for b in r.regions)
    unmasked = [r.name for r in matched if r.burned_in and not r.regions]
    if unmasked:
        raise DeidError(
            f"device matches recorder rule {unmasked[0]!r} that burns in annotations but has no mask regions"
        )
    if burned_in_flag and not boxes:
        raise DeidError("BurnedInAnnotation is YES and no recorder rule with mask regions matches the device")
    return MaskPlan(boxes=boxes, rules=tuple(r.name for r in matched if r.regions))


def mask_array(arr: np.ndarray, plan: MaskPlan, fill: int | tuple[int, ...] = 0) -> int:
    """Black out the plan's boxes in an HxW or HxWxC array in place; returns the number of boxes."""
    for x0, y0, x1, y1 in plan.boxes:
        arr[y0:y1, x0:x1] = fill
    return len(plan.boxes)


def mask_yuv420(planes: tuple[np.ndarray, np.ndarray, np.ndarray], plan: MaskPlan, limited: bool) -> int:
    """Black out the boxes in writable Y, U, V plane views (4:2:0): luma to black, chroma to neutral."""
    y, u, v = planes
    black = 16 if limited else 0
    for x0, y0, x1, y1 in plan.boxes:
        y[y0:y1, x0:x1] = black
        # Chroma is subsampled by two: widen the box so edge pixels lose their colour too.
        cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2
        u[cy0:cy1, cx0:cx1] = 128
        v[cy0:cy1, cx0:cx1] = 128
    return len(plan.boxes)
