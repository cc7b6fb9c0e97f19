"""Identifier scan of label text: a case table of what is flagged and what is not."""

from __future__ import annotations

import pytest

from site_node.deid.phi_scan import categories, clean_text, known_tokens, scan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0\tPreparation\n25\tCalotTriangleDissection", []),
        ("Frame\tGrasper\tBipolar\n0\t1\t0", []),
        ("video01,125,ClippingCutting", []),
        ("operated on 2021-03-04", ["date"]),
        ("born 04.03.1961", ["date"]),
        ("12 March 2021", ["date"]),
        ("call +41 79 123 45 67", ["phone"]),
        ("mail john.doe@example.org", ["email"]),
        ("MRN: 00123", ["identifier label"]),
        ("Patient name = x", ["identifier label"]),
        ("seen by Dr. Smithers", ["person title"]),
        ("DOE^JOHN", ["dicom person name"]),
        ("account 1234567890", ["long number"]),
    ],
)
def test_scan_case_table(text: str, expected: list[str]) -> None:
    assert categories(scan(text)) == expected


def test_known_identifiers_are_found_case_insensitively() -> None:
    tokens = known_tokens(["Doe^Johnathan", "MRN-4711"])
    assert categories(scan("case of JOHNATHAN doe, mrn-4711", tokens)) == ["known identifier"]


def test_clean_text_keeps_meaning_and_drops_values_with_patterns() -> None:
    tokens = known_tokens(["Doe^Johnathan"])
    assert clean_text("Lap chole Johnathan", tokens) == ("Lap chole", 1)
    assert clean_text("Lap chole 2021-03-04", tokens)[0] == ""
