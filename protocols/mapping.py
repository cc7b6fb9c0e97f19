"""The key check every config loader shares: a mapping with no keys outside the allowed set."""

from __future__ import annotations

from typing import Any

from protocols.errors import ConfigError, SurgFedError


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
