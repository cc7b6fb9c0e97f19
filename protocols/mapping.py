"""The checks every config loader shares: a mapping with no unknown keys, and typed field values."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, TypeVar

from protocols.errors import ConfigError, SurgFedError

E = TypeVar("E", bound=Enum)


def check_mapping(
    data: Any, where: str, allowed: set[str] | frozenset[str], error: type[SurgFedError] = ConfigError
) -> dict[str, Any]:
    """`data` as a mapping with no keys outside `allowed`; `error` naming `where` otherwise."""
    if not isinstance(data, dict):
        raise error(f"{where} must be a mapping, got {type(data).__name__} ({str(data)[:80]!r})")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise error(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data


def flag(value: Any, name: str, error: type[SurgFedError] = ConfigError) -> bool:
    """A true boolean; YAML/TOML 1 and 0 are not booleans here."""
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, got {value!r}")
    return value


def number(
    value: Any, name: str, low: float | None = None, high: float | None = None, error: type[SurgFedError] = ConfigError
) -> float:
    """A finite number (never a boolean) in [low, high] where bounds are given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def integer(value: Any, name: str, low: int, high: int, error: type[SurgFedError] = ConfigError) -> int:
    """An integer (never a boolean or a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def enum_value(kind: type[E], value: Any, name: str, error: type[SurgFedError] = ConfigError) -> E:
    """`value` as a member of `kind`, by value."""
    try:
        return kind(value)
    except ValueError:
        raise error(f"{name} must be one of {[k.value for k in kind]}, got {value!r}") from None
