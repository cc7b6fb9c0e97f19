"""Blinding: no institution name survives in any byte of any output, and pseudonyms are consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from protocols.errors import DataError
from reports import Blinder, StudyMeta, TaskInfo, find_leaks, pseudonym, write_report

ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "latin-1")


def name_variants(name: str) -> set[bytes]:
    """A name in every case form and encoding a viewer or grep could find it in."""
    forms = {name, name.lower(), name.upper(), name.casefold(), name.title()}
    out = set()
    for form in forms:
        for enc in ENCODINGS:
            try:
                out.add(form.encode(enc))
            except UnicodeEncodeError:
                pass
    return out


def contains_name(data: bytes, name: str) -> bool:
    """Raw byte search plus a case-insensitive search of the bytes decoded every plausible way."""
    if any(v in data for v in name_variants(name)):
        return True
    target = name.casefold()
    texts = [data.decode("utf-8", "ignore"), data.decode("latin-1")]
    for offset in (0, 1):
        chunk = data[offset : len(data) - (len(data) - offset) % 2]
        texts += [chunk.decode("utf-16-le", "ignore"), chunk.decode("utf-16-be", "ignore")]
    return any(target in t.casefold() for t in texts)


def test_blinded_report_has_no_site_name_in_any_byte(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    written = write_report(rounds_results, tmp_path, meta, tasks=infos, blind=True)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert set(files) == set(written)
    suffixes = {p.suffix for p in files}
    assert {".png", ".svg", ".html", ".csv", ".md", ".tex"} <= suffixes
    for path in files:
        data = path.read_bytes()
        for name in sites:
            assert not contains_name(data, name), f"{name!r} found in {path.name}"
            # Distinctive single words too (the unblinded names are multi-word).
            for word in (w for w in re.split(r"\s+", name) if len(w) >= 6):
                assert not contains_name(data, word), f"{word!r} (from {name!r}) found in {path.name}"


def test_unblinded_report_does_name_sites_so_the_check_above_can_fail(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    write_report(results, tmp_path, meta, tasks=infos)
    for suffix in ("csv", "md", "tex", "html"):
        data = next(tmp_path.glob(f"*.{suffix}")).read_bytes()
        assert contains_name(data, sites[0]), suffix
    assert contains_name((tmp_path / "forest_phase.svg").read_bytes(), sites[3])  # text kept as an SVG comment
    assert contains_name("x".join(sites).encode("utf-16-le"), sites[3].upper())


def test_pseudonyms_are_consistent_across_outputs(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path
) -> None:
    write_report(rounds_results, tmp_path, meta, tasks=infos, blind=True)
    per_center = pd.read_csv(tmp_path / "per_center.csv")
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    centers = ["Center A", "Center B", "Center C", "Center D"]
    assert [c for c in dict.fromkeys(per_center["center"]) if c.startswith("Center ")] == centers
    assert list(dict.fromkeys(rounds["center"])) == centers
    # The same center keeps its pseudonym across rounds: Center D is the suppressed, held-out one everywhere.
    assert rounds.loc[rounds["center"] == "Center D", "suppressed"].groupby(rounds["task"]).all().to_dict() == {
        "cvs": False,
        "phase": True,
    }
    assert set(rounds.loc[rounds["center"] == "Center C", "role"]) == {"held_out"}
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert "Center D: suppressed by the site&#x27;s release gate" in text.replace("'", "&#x27;")
    site_a = "Center A (software surgfed 0.1.0, release k>=10; approval by the Center A data office)"
    assert site_a in md and site_a.replace(">", "&gt;") in html
    assert "Institutions are blinded" in html


def test_pseudonym_letters() -> None:
    assert [pseudonym(i) for i in (0, 1, 25, 26, 27, 701, 702)] == [
        "Center A",
        "Center B",
        "Center Z",
        "Center AA",
        "Center AB",
        "Center ZZ",
        "Center AAA",
    ]


def test_blinder_scrubs_whole_names_in_any_case_longest_first() -> None:
    blinder = Blinder(["St Mary", "St Mary Hospital", "Isar"], enabled=True)
    assert blinder.text("from ST MARY HOSPITAL and st mary") == "from Center B and Center A"
    assert blinder.text("Isarstrasse is not ISAR.") == "Isarstrasse is not Center C."
    assert Blinder(["St Mary"], enabled=False).text("St Mary") == "St Mary"


def test_leak_check_finds_names_in_utf16_and_any_case(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes("prefix Klinikum RECHTS der Isar suffix".encode("utf-16-be"))
    assert find_leaks([path], ["Klinikum rechts der Isar"]) == {path: ["Klinikum rechts der Isar"]}
    path.write_bytes(b"nothing to see")
    assert find_leaks([path], ["Klinikum rechts der Isar"]) == {}
    # Pseudonyms and too-short names are not leaks: a site called "A" would match every "a".
    path.write_bytes(b"Center A has a score; see the Centre")
    assert find_leaks([path], ["A", "Centre"]) == {path: ["Centre"]}


def test_write_report_refuses_a_leaking_blinded_report(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reports.blind as blind_module

    # Simulate a writer that forgets to blind: the safety net must raise rather than return the paths.
    monkeypatch.setattr(blind_module.Blinder, "center", lambda self, name: name)
    with pytest.raises(DataError, match="still names institutions"):
        write_report(results, tmp_path, meta, tasks=infos, blind=True)
