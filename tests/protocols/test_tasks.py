"""Task definitions: the table headline and the Arena component are separate fields, validated when loaded."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.errors import ConfigError
from protocols.tasks import Scale, load_task, parse_task


@pytest.mark.parametrize(
    ("task", "headline", "fallback", "arena"),
    [
        ("phase", "accuracy", (), "accuracy"),
        ("action", "accuracy", (), "accuracy"),
        ("triplet", "ap_ivt", ("exact_match",), "exact_match"),  # AP_ivt where scores exist, else exact match
        ("cvs", "balanced_accuracy", (), "accuracy"),  # the Arena keeps SurgVLM's CVS accuracy
        ("localization", "miou", (), "miou"),
    ],
)
def test_headline_and_arena_component(task: str, headline: str, fallback: tuple[str, ...], arena: str) -> None:
    t = load_task(task)
    assert (t.headline, t.headline_fallback, t.arena_metric) == (headline, fallback, arena)
    assert all(f"{m}_parseable" in [x.name for x in t.metrics] for m in t.sensitivity)
    assert all(m.scale is Scale.PROPORTION for m in t.metrics)  # every metric is bounded in [0, 1]


def _task(**extra: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "title": "T",
        "answer_kind": "single_label",
        "prompt": "p",
        "metrics": [{"name": "accuracy", "scale": "proportion"}, {"name": "f1", "scale": "proportion"}],
        "headline": "f1",
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"arena": "recall"}, "arena 'recall' is not one of its metrics"),
        ({"headline_fallback": ["ap"]}, "headline_fallback 'ap' is not one of its metrics"),
        ({"sensitivity": ["accuracy"]}, "needs both it and accuracy_parseable"),
        ({"sensitivity": "accuracy"}, "must be a list of metric names"),
    ],
)
def test_bad_headline_fields_are_named(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_task(_task(**extra), "t.yaml")


def test_arena_defaults_to_the_headline() -> None:
    assert parse_task(_task(), "t.yaml").arena_metric == "f1"
