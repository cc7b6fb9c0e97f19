"""Durations in human units (`14d`, `36h`, `90m`) for round deadlines and extensions."""

from __future__ import annotations

import re

from protocols.errors import ConfigError, SurgFedError

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([dhm])")
_UNIT_MINUTES = {"d": 24 * 60, "h": 60, "m": 1}
EXPECTED = "a duration such as 14d, 36h or 90m (days, hours or minutes)"


def parse_minutes(value: object, name: str, error: type[SurgFedError] = ConfigError) -> float:
    """A positive duration string as minutes; `error` names the field, the value and the expected form."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise error(f"{name} must be {EXPECTED}, got {value!r}")
    minutes = float(match.group(1)) * _UNIT_MINUTES[match.group(2)]
    if minutes <= 0:
        raise error(f"{name} must be a positive duration ({EXPECTED}), got {value!r}")
    return minutes


def show_minutes(minutes: float) -> str:
    """The shortest exact form: 20160 -> '14d', 90 -> '90m', 2160 -> '36h'."""
    for unit in ("d", "h"):
        count = minutes / _UNIT_MINUTES[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{minutes:g}m"
