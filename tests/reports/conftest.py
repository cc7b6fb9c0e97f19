"""Shared fixtures for the reports tests: a small multi-center results table, study metadata, headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from protocols.tasks import Scale
from reports import SiteInfo, StudyMeta, TaskInfo

# Real-looking institution names (one non-ASCII) so blinding is tested on what sites are really called.
SITES = (
    "Strasbourg University Hospital",
    "Policlinico Gemelli Roma",
    "Klinikum rechts der Isar",
    "Hôpital Lariboisière Paris",
)
PHASE = TaskInfo(
    headline="accuracy",
    scales={"accuracy": Scale.PROPORTION, "f1": Scale.UNIT},
    title="Surgical phase recognition",
)
CVS = TaskInfo(
    headline="balanced_accuracy", scales={"balanced_accuracy": Scale.PROPORTION}, title="Critical view of safety"
)
INFOS = {"phase": PHASE, "cvs": CVS}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--hide-scrollbars",
)


def row(
    center: str,
    task: str,
    metric: str,
    est: float | None,
    lo: float | None,
    hi: float | None,
    *,
    rnd: int = 1,
    role: str = "evaluate",
    n_videos: int | None = 12,
    n_frames: int | None = 1000,
    suppressed: bool = False,
) -> dict[str, object]:
    return {
        "study": "phase-ext-2026",
        "round": rnd,
        "center": center,
        "role": role,
        "task": task,
        "metric": metric,
        "estimate": est,
        "ci_low": lo,
        "ci_high": hi,
        "n_videos": n_videos,
        "n_frames": n_frames,
        "parse_fail_rate": 0.01,
        "suppressed": suppressed,
    }


def phase_rows(rnd: int = 1, shift: float = 0.0, roles: tuple[str, ...] = ("evaluate",) * 4) -> list[dict[str, object]]:
    """Four centers: two ordinary, one at accuracy 1.0 (CI touching 1), one suppressed."""
    a, b, c, d = SITES
    ra, rb, rc, rd = roles
    return [
        row(a, "phase", "accuracy", 0.81 + shift, 0.76 + shift, 0.86 + shift, rnd=rnd, role=ra),
        row(a, "phase", "f1", 0.70 + shift, 0.62 + shift, 0.78 + shift, rnd=rnd, role=ra),
        row(b, "phase", "accuracy", 0.90 + shift, 0.86 + shift, 0.93 + shift, rnd=rnd, role=rb),
        row(b, "phase", "f1", 0.78, 0.74, 0.82, rnd=rnd, role=rb),
        row(c, "phase", "accuracy", 1.0, 0.97, 1.0, rnd=rnd, role=rc, n_frames=400),
        row(c, "phase", "f1", 0.92, 0.88, 0.96, rnd=rnd, role=rc, n_frames=400),
        row(d, "phase", "accuracy", None, None, None, rnd=rnd, role=rd, n_videos=3, n_frames=None, suppressed=True),
        row(d, "phase", "f1", None, None, None, rnd=rnd, role=rd, n_videos=3, n_frames=None, suppressed=True),
    ]


@pytest.fixture
def sites() -> tuple[str, ...]:
    return SITES


@pytest.fixture
def infos() -> dict[str, TaskInfo]:
    """Explicit task infos (phase with accuracy and f1, and a one-metric cvs) so tests need no task files."""
    return dict(INFOS)


@pytest.fixture
def make_row() -> Callable[..., dict[str, object]]:
    return row


@pytest.fixture
def render_page() -> Callable[..., list[str]]:
    return render


@pytest.fixture
def results() -> pd.DataFrame:
    """One round of the phase task."""
    return pd.DataFrame(phase_rows())


@pytest.fixture
def rounds_results() -> pd.DataFrame:
    """Two fine-tuning rounds: two trainers, two held-out centers, plus a second task (cvs)."""
    roles = ("train", "train", "held_out", "held_out")
    rows = phase_rows(0, 0.0, roles) + phase_rows(1, 0.03, roles)
    for rnd in (0, 1):
        rows += [
            row(SITES[0], "cvs", "balanced_accuracy", 0.70, 0.64, 0.76, rnd=rnd, role="train"),
            row(SITES[1], "cvs", "balanced_accuracy", 0.66, 0.60, 0.72, rnd=rnd, role="train"),
            row(SITES[2], "cvs", "balanced_accuracy", 0.74, 0.69, 0.79, rnd=rnd, role="held_out"),
            row(SITES[3], "cvs", "balanced_accuracy", 0.61, 0.52, 0.70, rnd=rnd, role="held_out"),
        ]
    return pd.DataFrame(rows)


@pytest.fixture
def meta() -> StudyMeta:
    return StudyMeta(
        study="phase-ext-2026",
        protocol_id="phase-external-validation",
        protocol_version="1.2.0",
        protocol_hash="a" * 64,
        model_hash="b" * 64,
        adapter_hashes={1: "c" * 64},
        round_dates={0: "2026-11-02", 1: "2026-11-09"},
        # A site name inside free text must be scrubbed too.
        sites=[SiteInfo(s, "surgfed 0.1.0", f"k>=10; approval by the {s} data office") for s in SITES],
        package_version="0.1.0",
        bootstrap_replicates=1000,
    )


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.fail(
        "headless Chromium is required for the report rendering test but was not found on PATH; "
        "install Debian's package with `apt-get update && apt-get install -y chromium`",
        pytrace=False,
    )


def render(page: Path, screenshot: Path, *, height: int = 4000, timeout: float = 90.0) -> list[str]:
    """Open the page in headless Chromium, save a screenshot, and return the console lines it logged."""
    exe = find_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size=1280,{height}",
            f"--screenshot={screenshot}",
            page.resolve().as_uri(),
        ]
        # Its own process group, so the browser's helpers can be ended with it.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            pytest.fail(f"Chromium did not finish rendering {page} within {timeout:.0f} s", pytrace=False)
        finally:
            _kill_group(proc)
    if proc.returncode != 0 or not screenshot.is_file():
        pytest.fail(f"Chromium failed (exit {proc.returncode}) on {page}:\n{err[-3000:]}", pytrace=False)
    return [line for line in err.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
