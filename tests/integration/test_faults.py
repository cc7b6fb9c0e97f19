"""Nothing lost on faults: a site engine and `hub serve` killed mid-study; the table equals a clean run's."""

from __future__ import annotations

from pathlib import Path

from prepare import CHOLEC80, FAULT_SITES

from hub.demo.faults import run_faults


def test_kills_and_restarts_leave_the_per_center_table_as_a_clean_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # One center on cholec80 data (phase and grounding), lean for `make test` (`hub demo --faults` runs three): it
    # holds enough videos to be still working when its engine is killed after its first finished video.
    lines: list[str] = []
    clean, faulty = run_faults(tmp_path, sites=FAULT_SITES, formats=CHOLEC80, echo=lines.append)
    assert all(j["state"] == "stored" for j in faulty.jobs.values()), faulty.jobs
    assert len(faulty.table) == len(clean.table) > 0
    assert faulty.table["center"].nunique() == 1
    text = "\n".join(lines)
    assert "killed the engine of st-elsewhere mid-job" in text and "killed `hub serve` mid-study" in text
    assert (
        "the same job id after both restarts (True), its checkpointed videos kept (True), one job at the site (1)"
        in text
    )
    assert f"equal: all {len(clean.table)} released numbers of 1 center(s) match" in text
