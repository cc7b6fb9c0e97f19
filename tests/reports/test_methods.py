"""The methods paragraph states every convention; the tables show parse failures, the sensitivity analysis, the
small-site flag and the leading metric; bounded metrics' prediction intervals stay inside [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from reports import POOLED, StudyMeta, TaskInfo, write_report
from reports.analysis import analyse, per_center_table
from reports.taskinfo import task_info


@pytest.mark.parametrize("hk", [False, True])
def test_methods_paragraph_states_every_convention(
    results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path, hk: bool
) -> None:
    write_report(results, tmp_path, meta, tasks=infos, hartung_knapp=hk)
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8").split("## Methods", 1)[1].replace("\\_", "_")
    conventions = [
        "video-level (cluster) bootstrap",  # resampling unit
        "The resampling unit is the video",
        "t(n − 1)",  # interval method
        "SD of the logit-transformed replicates",  # the released SE
        "share is released",  # undefined replicates
        "strata of videos with and without a positive",
        "Unparseable answers count as incorrect",  # the unparseable rule
        "a phase never predicted having precision 0",  # phase convention
        "Cholec80 evaluation script differs",
        "10-second relaxed boundary",
        "pooled on the logit scale",  # pooling scale
        "never excluded",  # zero-width CI
        "undefined (NaN, not released)",  # F1
        "Hungarian",  # localization matching
        "t(k − 2)",  # the prediction interval and its SE
        "SE(μ) the standard error used for the CI",
        "2 centers is shown with a warning",
        "published definition",  # Arena
        "bootstrap with 1000 replicates",  # replicates, from the protocol
        "√(max(1, q)/Σw)",  # the HKSJ rule, applied or not
    ]
    for text in conventions:
        assert text in md, text


def test_bounded_metric_prediction_interval_stays_in_unit_interval(make_row: Callable, sites: tuple[str, ...]) -> None:
    # The recomputation's case: F1 spread widely over centers gave a raw-scale PI of 0.187-1.055.
    rows = [
        make_row(sites[0], "phase", "f1", 0.95, 0.90, 0.98),
        make_row(sites[1], "phase", "f1", 0.55, 0.45, 0.65),
        make_row(sites[2], "phase", "f1", 0.85, 0.78, 0.91),
        make_row(sites[3], "phase", "f1", 0.70, 0.62, 0.77),
    ]
    table = per_center_table(analyse(pd.DataFrame(rows), {"phase": task_info("phase")}), "phase-ext-2026", 1)
    pooled = table[table["center"] == POOLED].iloc[0]
    assert pooled["pooling_scale"] == "logit"
    assert 0.0 < pooled["pi_low"] < pooled["estimate"] < pooled["pi_high"] < 1.0


def test_tables_show_parse_failures_sensitivity_small_sites_and_the_leading_metric(
    make_row: Callable, sites: tuple[str, ...], meta: StudyMeta, tmp_path: Path
) -> None:
    rows = []
    for i, site in enumerate(sites[:3]):
        n_videos = 6 if i == 0 else 12  # the first center has fewer than 10 videos
        for metric, est in (("exact_match", 0.40 + i / 20), ("exact_match_parseable", 0.50 + i / 20)):
            r = make_row(site, "triplet", metric, est, est - 0.05, est + 0.05, n_videos=n_videos)
            r["parse_fail_rate"] = 0.10 * (i + 1)
            rows.append(r)
    write_report(pd.DataFrame(rows), tmp_path, meta, formats=["md"], tasks={"triplet": task_info("triplet")})
    md = (tmp_path / "per_center.md").read_text(encoding="utf-8").replace("\\_", "_")
    task = md.split("(triplet): per-center results", 1)[1].split("###", 1)[0]
    assert "| Unparseable |" in task and "| 10.0% |" in task and "| 30.0% |" in task
    assert "| 20.0% |" in task.split(POOLED, 1)[1]  # pooled over frames: (0.1 + 0.2 + 0.3) / 3 at equal frames
    assert "| 6† |" in task and "| 12 |" in task
    assert "Leading metric: exact_match (its headline ap_ivt was not computed)" in task
    assert "exact_match_parseable" not in task.split("\n\n", 2)[1]  # only in the sensitivity table
    sens = md.split("(triplet): sensitivity to unparseable answers", 1)[1]
    assert "exact_match, parseable frames only (95% CI)" in sens and "0.500 (0.450–0.550)" in sens
