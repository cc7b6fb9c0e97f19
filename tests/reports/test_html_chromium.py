"""report.html is self-contained and renders in headless Chromium without console errors, and not blank."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reports import StudyMeta, TaskInfo, write_report

TAB_RED = np.array([214, 39, 40])  # the pooled diamond and prediction interval
TAB_BLUE = np.array([31, 119, 180])  # the centers' squares


def _near(pixels: np.ndarray, color: np.ndarray, tol: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - color).max(axis=-1) <= tol).sum())


def test_report_html_is_self_contained(
    rounds_results: pd.DataFrame, meta: StudyMeta, infos: dict[str, TaskInfo], tmp_path: Path
) -> None:
    write_report(rounds_results, tmp_path, meta, tasks=infos)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [
        r for r in refs if not r.startswith(("data:", "#"))
    ]
    assert "<script" not in html and "url(http" not in html and "@import" not in html
    assert html.count("<svg") == 4  # forest and rounds plots for phase and cvs
    assert len(set(re.findall(r'\sid="([^"]+)"', html))) == len(re.findall(r'\sid="([^"]+)"', html))  # ids unique
    for text in ("Pooled (random effects)", "Arena Score", "Methods", "a" * 64, "b" * 64, "c" * 64, "2026-11-09"):
        assert text in html


def test_report_renders_in_headless_chromium(
    rounds_results: pd.DataFrame,
    meta: StudyMeta,
    infos: dict[str, TaskInfo],
    tmp_path: Path,
    render_page: Callable[..., list[str]],
) -> None:
    write_report(rounds_results, tmp_path, meta, tasks=infos, blind=True)
    shot = tmp_path / "screenshot.png"
    console = render_page(tmp_path / "report.html", shot)
    assert console == [], "console messages while rendering report.html:\n" + "\n".join(console)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    non_white = (pixels.min(axis=-1) < 245).mean()
    assert non_white > 0.01, f"screenshot is blank ({non_white:.4%} non-white pixels)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    # The inline SVG forest plots rendered: their red diamond/PI and blue squares are on screen.
    assert _near(pixels, TAB_RED) > 50 and _near(pixels, TAB_BLUE) > 50


def test_console_error_detection_works(tmp_path: Path, render_page: Callable[..., list[str]]) -> None:
    # A positive control: if Chromium stopped logging console messages, the test above would pass vacuously.
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>x</title></head>'
        "<body><p>x</p><script>console.error('deliberate'); notDefined();</script></body></html>",
        encoding="utf-8",
    )
    console = render_page(page, tmp_path / "bad.png", height=600)
    assert any("deliberate" in line for line in console)
    assert any("Uncaught ReferenceError" in line for line in console)


def test_missing_chromium_fails_with_instructions(
    tmp_path: Path, render_page: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No silent skip: without a browser the rendering check must fail and say how to install one.
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        render_page(tmp_path / "report.html", tmp_path / "shot.png")
