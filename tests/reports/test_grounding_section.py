"""The "Reasoning grounding" section: per-center table with a pooled row, forest plot, denominators in the methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from protocols.tasks import load_task
from reports import POOLED, StudyMeta, TaskInfo, write_report
from reports.grounding import METRICS, TITLE

GROUNDING = load_task("grounding")


def _rows(make_row: Callable[..., dict[str, object]], sites: tuple[str, ...]) -> list[dict[str, object]]:
    """Three centers report every grounding metric (falling with the center), the fourth is suppressed."""
    rows = []
    for k, site in enumerate(sites[:3]):
        for j, m in enumerate(GROUNDING.metrics):
            est = 0.7 - 0.1 * k - 0.01 * j
            rows.append(make_row(site, "grounding", m.name, est, est - 0.05, est + 0.05))
    rows += [
        make_row(sites[3], "grounding", m.name, None, None, None, n_videos=2, n_frames=None, suppressed=True)
        for m in GROUNDING.metrics
    ]
    return rows


def test_grounding_section_tables_forest_and_methods(
    results: pd.DataFrame,
    meta: StudyMeta,
    infos: dict[str, TaskInfo],
    make_row: Callable[..., dict[str, object]],
    sites: tuple[str, ...],
    tmp_path: Path,
) -> None:
    df = pd.concat([results, pd.DataFrame(_rows(make_row, sites))], ignore_index=True)
    written = write_report(df, tmp_path, meta, tasks=infos)  # grounding's info comes from its task definition
    per_center = pd.read_csv(tmp_path / "per_center.csv")
    g = per_center[per_center["task"] == "grounding"]
    assert set(g["metric"]) == {m.name for m in GROUNDING.metrics}
    pooled = g[g["center"] == POOLED].set_index("metric")
    assert len(pooled) == len(GROUNDING.metrics) and (pooled["k"] == 3).all()
    assert 0.55 < pooled.loc["grounded_accuracy", "estimate"] < 0.65
    assert tmp_path / "forest_grounding.png" in written and (tmp_path / "forest_grounding.svg").is_file()
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8")
    assert f"{TITLE}: per-center results" in md
    summary = md.split(f"{TITLE}: per-center results")[1].split("\n\n")[1]
    lines = [line for line in summary.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 4 + 1  # header, rule, four centers, pooled
    assert lines[-1].startswith(f"| {POOLED}") or POOLED in lines[-1]
    assert "suppressed" in lines[-2]
    methods = md.split("## Methods")[1].replace("\\", "")  # Markdown escapes the underscores
    for metric, (_, denominator) in METRICS.items():
        assert f"{metric} over {denominator}" in methods
    # grounding is no recognition task: it stays out of the Arena Score
    arena = pd.read_csv(tmp_path / "arena.csv")
    assert not arena["tasks"].fillna("").str.contains("grounding").any()
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert TITLE in html and "Forest plot, Reasoning grounding: grounded_accuracy" in html
