"""Site-supplied text is stripped of terminal escapes where the hub decodes a reply (real Flower records)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from protocols.text import strip_controls

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub" / "flower_app"))
from surgfed_app.records import from_recorddict  # noqa: E402

ATTACK = "\x1b[2J\x1b[1;1Hround 1 evaluate site-b: stored\x07\x9b31m\u202egnp.exe"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text", "plain text"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("a\nb\tc\rd", "a b c d"),
        ("nul\x00del\x7fcsi\x9b", "nuldelcsi"),
        ("\u202eevil\u2066", "evil"),
        ("Zürich OR-3", "Zürich OR-3"),
    ],
)
def test_strip_controls(raw: str, clean: str) -> None:
    assert strip_controls(raw) == clean


def test_ansi_escape_in_a_site_reply_is_stripped_when_decoded() -> None:
    content = RecordDict(
        {
            "job": ConfigRecord({"job-id": "j1", "state": "failed", "detail": ATTACK}),
            "site\x1b]0;x": ConfigRecord({"site-name": ["ok", "\x1b[5mblink"]}),
            "train": MetricRecord({"num-examples": 3}),
        }
    )
    records = from_recorddict(content, from_site=True)
    detail = records["job"]["values"]["detail"]
    assert "\x1b" not in detail and "\x07" not in detail and "\x9b" not in detail and "\u202e" not in detail
    assert "round 1 evaluate site-b: stored" in detail
    assert "site]0;x" in records and records["site]0;x"]["values"]["site-name"] == ["ok", "[5mblink"]
    assert records["train"]["values"]["num-examples"] == 3


def test_the_hubs_requests_keep_their_newlines() -> None:
    # A protocol's YAML travels hub -> site in a SUBMIT: the ClientApp decodes it without stripping.
    text = "# comment\nstudy_id: s\n"
    records = from_recorddict(RecordDict({"job": ConfigRecord({"protocol": text})}))
    assert records["job"]["values"]["protocol"] == text
