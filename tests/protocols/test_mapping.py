"""The shared key check: mappings pass, anything else or an unknown key is named with the loader's error."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.errors import ConfigError, ProtocolError, SurgFedError
from protocols.mapping import check_mapping


def test_a_mapping_with_allowed_keys_is_returned_as_is() -> None:
    data = {"a": 1}
    assert check_mapping(data, "x.yaml", {"a", "b"}) is data


@pytest.mark.parametrize(
    ("data", "error", "pattern"),
    [
        ([1, 2], ConfigError, r"x\.yaml must be a mapping, got list \('\[1, 2\]'\)"),
        ("text", ProtocolError, r"x\.yaml must be a mapping, got str"),
        ({"a": 1, "zz": 2, "c": 3}, ConfigError, r"x\.yaml: unknown keys \['c', 'zz'\]; allowed: \['a', 'b'\]"),
    ],
)
def test_bad_input_names_where_and_what(data: Any, error: type[SurgFedError], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        check_mapping(data, "x.yaml", {"a", "b"}, error)
