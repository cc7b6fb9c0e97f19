"""Study protocol schema: validation on load and the content hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from protocols.errors import ProtocolError
from protocols.study import load_protocol, loads_protocol, parse_protocol

BASE = {
    "study": {"id": "ext-val", "version": "1.0", "title": "t"},
    "sites": ["a", "b"],
    "model": {"name": "m", "manifest_sha256": "ab" * 32},
    "tasks": [{"name": "phase", "sample_every_s": 2.0}],
    "round_plan": {"rounds": 1, "deadline_minutes": 5},
    "privacy": {"min_videos": 5},
}


def with_(path: str, value: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


def test_valid_protocol_loads_with_defaults() -> None:
    p = parse_protocol(BASE)
    assert p.study_id == "ext-val" and p.sites == ("a", "b")
    assert p.privacy.min_videos == 5 and p.privacy.outputs.value == "aggregate"
    assert p.task("phase").definition.headline == "accuracy"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("study.id", "bad id!", "study.id"),
        ("sites", [], "sites"),
        ("sites", ["a", "a"], "sites"),
        ("model.manifest_sha256", "xyz", "manifest_sha256"),
        ("tasks", [{"name": "nosuchtask"}], "nosuchtask"),
        ("tasks", [{"name": "phase", "sample_every_s": 0}], "sample_every_s"),
        ("privacy", {"min_videos": 0}, "min_videos"),
        ("privacy", {"outputs": "everything"}, "everything"),
        ("round_plan", {"rounds": 0}, "rounds"),
        ("extra_key", 1, "unknown keys"),
    ],
)
def test_invalid_protocols_name_the_problem(path: str, value: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(with_(path, value), "study.yaml")


def test_hash_covers_resolved_protocol_and_is_stable(tmp_path: Path) -> None:
    a = parse_protocol(BASE)
    assert a.content_hash == parse_protocol(yaml.safe_load(yaml.safe_dump(BASE))).content_hash
    assert a.content_hash != parse_protocol(with_("privacy", {"min_videos": 6})).content_hash
    assert a.content_hash != parse_protocol(with_("tasks", [{"name": "phase", "max_new_tokens": 10}])).content_hash
    resolved = a.resolved()
    assert "Look at the frame" in resolved["tasks"][0]["definition"]["prompt"]  # prompts are hashed
    assert resolved["package_version"]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot read protocol"):
        load_protocol(tmp_path / "missing.yaml")
    with pytest.raises(ProtocolError, match="invalid YAML"):
        loads_protocol("study: [", "x.yaml")
