"""Per-round deadlines in human units and the min_sites quorum: what loads, and what is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from protocols.durations import parse_minutes, show_minutes
from protocols.errors import ProtocolError, UsageError
from protocols.study import loads_protocol

HEAD = """
study: {id: s, version: "1"}
sites: [a, b, c]
model: {manifest_sha256: "%s"}
tasks: [phase]
""" % ("ab" * 32)


def load(round_plan: dict[str, Any]) -> Any:
    return loads_protocol(HEAD + yaml.safe_dump({"round_plan": round_plan}), "study.yaml")


@pytest.mark.parametrize(
    ("deadline", "minutes"),
    [("14d", 14 * 24 * 60), ("36h", 36 * 60), ("90m", 90), ("1.5h", 90), ("366d", 366 * 24 * 60)],
)
def test_deadline_in_days_hours_minutes(deadline: str, minutes: float) -> None:
    assert load({"deadline": deadline}).round_plan.deadline_minutes == minutes


def test_older_files_keep_deadline_minutes_and_their_hash() -> None:
    old, new = load({"deadline_minutes": 90}), load({"deadline": "90m"})
    assert old.round_plan.deadline_minutes == new.round_plan.deadline_minutes == 90
    assert old.content_hash == new.content_hash  # the same study, written either way


@pytest.mark.parametrize(
    ("round_plan", "message"),
    [
        (
            {"deadline": "14"},
            r"study\.yaml: round_plan\.deadline must be a duration such as 14d, 36h or 90m .*got '14'",
        ),
        ({"deadline": 14}, r"round_plan\.deadline must be a duration such as 14d.*, got 14$"),
        ({"deadline": "2w"}, r"round_plan\.deadline must be a duration .*, got '2w'"),
        ({"deadline": "-3d"}, r"round_plan\.deadline must be a duration .*, got '-3d'"),
        ({"deadline": "0h"}, r"round_plan\.deadline must be a positive duration .*, got '0h'"),
        ({"deadline": "400d"}, r"round_plan\.deadline must be at most 366d, got '400d'"),
        ({"deadline": "1d", "deadline_minutes": 5}, r"give deadline \(e\.g\. 14d\) or deadline_minutes"),
        ({"min_sites": 4}, r"round_plan\.min_sites must be an integer in \[1, 3\] \(the number of sites\), got 4"),
        ({"min_sites": 0}, r"round_plan\.min_sites must be an integer in \[1, 10000\], got 0"),
        ({"min_sites": True}, r"round_plan\.min_sites must be an integer .*, got True"),
        ({"min_sites": "2"}, r"round_plan\.min_sites must be an integer .*, got '2'"),
    ],
)
def test_refused_with_field_value_and_expected_form(round_plan: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        load(round_plan)


def test_min_sites_loads_and_is_hashed() -> None:
    two = load({"deadline": "36h", "min_sites": 2})
    assert two.round_plan.min_sites == 2 and load({"deadline": "36h"}).round_plan.min_sites is None
    assert two.content_hash != load({"deadline": "36h"}).content_hash  # the sites approve the quorum too


@pytest.mark.parametrize(("minutes", "shown"), [(20160, "14d"), (2160, "36h"), (90, "90m"), (60, "1h"), (0.5, "0.5m")])
def test_shown_in_the_shortest_exact_unit(minutes: float, shown: str) -> None:
    assert show_minutes(minutes) == shown
    assert parse_minutes(shown, "x") == minutes


def test_an_extension_names_its_option() -> None:
    with pytest.raises(UsageError, match=r"--by must be a duration such as 14d, 36h or 90m .*got '7'"):
        parse_minutes("7", "--by", UsageError)
