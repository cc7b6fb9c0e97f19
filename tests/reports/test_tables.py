"""write_report's tables: the tidy CSV with pooled rows, Markdown and booktabs LaTeX, Arena Score, rounds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from protocols.errors import ConfigError, DataError
from protocols.results import COLUMNS
from reports import POOLED, POOLED_COLUMNS, StudyMeta, TaskInfo, write_report

CELL = re.compile(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)")


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True)


def test_per_center_csv_has_tidy_schema_and_one_pooled_row_per_task_metric(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    write_report(results, tmp_path, meta, tasks=infos)
    df = _csv(tmp_path / "per_center.csv")
    assert tuple(df.columns) == (*COLUMNS, *POOLED_COLUMNS)
    pooled = df[df["center"] == POOLED]
    assert sorted(pooled["metric"]) == ["accuracy", "f1"]
    assert pooled[["pi_low", "pi_high", "tau2", "i2"]].notna().all().all()
    assert df.loc[df["center"] != POOLED, ["pi_low", "pi_high", "tau2", "i2"]].isna().all().all()
    assert len(df) == 2 * (len(sites) + 1)
    suppressed = df[df["center"] == sites[3]]
    assert suppressed["suppressed"].all() and suppressed["note"].str.contains("not pooled").all()
    assert (pooled["k"] == 3).all()
    # Pooled rows come last within each task and metric.
    for _, group in df.groupby("metric", sort=False):
        assert group["center"].iloc[-1] == POOLED


def test_markdown_has_one_table_per_task_with_pooled_row_last(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    write_report(rounds_results, tmp_path, meta, tasks=infos)
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8")
    for task in ("phase", "cvs"):
        block = md.split(f"({task}): per-center results", 1)[1].split("\n\n", 2)[1]
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert lines[0].startswith("| Center | Role | Videos | Frames |")
        assert lines[-1].startswith(f"| **{POOLED}** |")
        assert len(lines) == 2 + len(sites) + 1
    phase = md.split("(phase): per-center results", 1)[1]
    assert "| suppressed | suppressed |" in phase
    assert CELL.search(phase)
    assert f"{sites[3]}: suppressed by the site's release gate (small cell or undefined); not pooled." in phase
    assert "| Unparseable |" in phase and "| 1.0% |" in phase  # each center's parse-failure rate, and pooled
    assert "## Methods" in md and "Arena Score" in md


def test_tex_is_booktabs_and_escaped(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path
) -> None:
    write_report(results, tmp_path, meta, tasks=infos)
    tex = (tmp_path / "per_center.tex").read_text(encoding="utf-8")
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\caption{"):
        assert cmd in tex
    assert "95\\% CI" in tex and "95% CI" not in tex.replace("95\\% CI", "")
    assert rf"\textbf{{{POOLED}}}" in tex
    assert re.search(r"0\.\d{3} \(0\.\d{3}--0\.\d{3}\)", tex)
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}")
    assert "–" not in tex and "τ" not in tex  # unicode mapped to LaTeX


def test_arena_score_names_tasks_and_averages_headlines(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    write_report(rounds_results, tmp_path, meta, tasks=infos)
    arena = _csv(tmp_path / "arena.csv").set_index("center")
    first = arena.loc[sites[0]]
    assert first["arena_score"] == pytest.approx((0.81 + 0.03 + 0.70) / 2)
    assert first["tasks"] == "phase:accuracy;cvs:balanced_accuracy" and first["n_tasks"] == 2
    assert arena.loc[sites[3], "n_tasks"] == 1 and arena.loc[sites[3], "missing_tasks"] == "phase"
    # The last center averaged only cvs: a pooled Arena Score over different task sets is refused.
    assert math.isnan(arena.loc[POOLED, "arena_score"]) and "different tasks" in arena.loc[POOLED, "note"]
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8")
    assert "tasks that ran: phase (accuracy), cvs (balanced\\_accuracy)" in md
    same = rounds_results[rounds_results["center"] != sites[3]]  # every center now averages phase and cvs
    write_report(same, tmp_path / "same", meta, tasks=infos)
    arena = _csv(tmp_path / "same" / "arena.csv").set_index("center")
    per_center = _csv(tmp_path / "same" / "per_center.csv")
    heads = per_center[(per_center["center"] == POOLED) & per_center["metric"].isin(["accuracy", "balanced_accuracy"])]
    assert arena.loc[POOLED, "arena_score"] == pytest.approx(heads["estimate"].mean())


def test_rounds_outputs_only_with_several_rounds(
    rounds_results: pd.DataFrame, results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path
) -> None:
    paths = {p.name for p in write_report(rounds_results, tmp_path / "two", meta, tasks=infos)}
    assert {"rounds.csv", "rounds_phase.png", "rounds_phase.svg", "rounds_cvs.png", "forest_cvs.svg"} <= paths
    rounds = _csv(tmp_path / "two" / "rounds.csv")
    assert tuple(rounds.columns) == COLUMNS and sorted(rounds["round"].unique()) == [0, 1]
    per_center = _csv(tmp_path / "two" / "per_center.csv")
    assert set(per_center["round"]) == {1}  # the last round by default
    early = _csv(
        Path(write_report(rounds_results, tmp_path / "r0", meta, round=0, tasks=infos)[0]).parent / "per_center.csv"
    )
    assert set(early["round"]) == {0}
    single = {p.name for p in write_report(results, tmp_path / "one", meta, tasks=infos)}
    assert "rounds.csv" not in single and not any(n.startswith("rounds_") for n in single)


def test_formats_subset_and_errors_name_the_value(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, make_row: Callable
) -> None:
    names = {p.name for p in write_report(results, tmp_path, meta, formats=["csv"], tasks=infos)}
    assert names == {"per_center.csv", "arena.csv", "forest_phase.png", "forest_phase.svg"}
    names = {p.name for p in write_report(results, tmp_path / "s", meta, formats="md, tex", tasks=infos)}
    assert {"per_center.md", "per_center.tex"} <= names and "per_center.csv" not in names
    with pytest.raises(ConfigError, match="'docx'"):
        write_report(results, tmp_path, meta, formats=["csv", "docx"], tasks=infos)
    with pytest.raises(DataError, match="round 7"):
        write_report(results, tmp_path, meta, round=7, tasks=infos)
    with pytest.raises(DataError, match="lacks columns \\['suppressed'\\]"):
        write_report(results.drop(columns=["suppressed"]), tmp_path, meta, tasks=infos)
    unknown = pd.concat([results, pd.DataFrame([make_row("X", "made_up_task", "auc", 0.5, 0.4, 0.6)])])
    with pytest.raises(ConfigError, match="made_up_task"):
        write_report(unknown, tmp_path, meta)
    odd_metric = pd.concat([results, pd.DataFrame([make_row("X", "phase", "kappa", 0.5, 0.4, 0.6)])])
    with pytest.raises(ConfigError, match="'kappa'"):
        write_report(odd_metric, tmp_path, meta, tasks=infos)


def test_builtin_task_definitions_are_used_when_no_infos_given(
    results: pd.DataFrame, meta: StudyMeta, tmp_path: Path
) -> None:
    write_report(results, tmp_path, meta)
    assert "Surgical phase recognition" in (tmp_path / "per_center.md").read_text(encoding="utf-8")


def test_outputs_are_byte_reproducible(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path
) -> None:
    first = write_report(rounds_results, tmp_path / "a", meta, tasks=infos, hartung_knapp=True)
    second = write_report(rounds_results, tmp_path / "b", meta, tasks=infos, hartung_knapp=True)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=False):
        assert a.read_bytes() == b.read_bytes(), a.name
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "Hartung-Knapp" in html


def test_numbers_of_a_suppressed_cell_are_never_published(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, sites: tuple[str, ...]
) -> None:
    leaky = results.copy()
    mask = leaky["center"] == sites[3]
    leaky.loc[mask, ["estimate", "ci_low", "ci_high"]] = [0.4321, 0.3123, 0.5987]
    write_report(leaky, tmp_path, meta, tasks=infos)
    for path in tmp_path.iterdir():
        if path.suffix in {".csv", ".md", ".tex", ".html", ".svg"}:
            text = path.read_text(encoding="utf-8")
            assert "0.432" not in text and "0.312" not in text and "0.599" not in text, path.name
