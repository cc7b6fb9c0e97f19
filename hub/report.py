"""`hub report`: read a study's latest finished launch from the store and hand the tidy table to `reports`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Sequence

from hub.home import HubHome
from protocols import __version__
from protocols.errors import DataError
from reports import write_report
from reports.meta import SiteInfo, StudyMeta


def _iso(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "n/a"


def study_meta(home: HubHome, study_id: str, launch: dict) -> StudyMeta:  # type: ignore[type-arg]
    store = home.store()
    study = store.study(study_id)
    jobs = store.jobs(launch["launch_id"])
    rounds = sorted({j["round"] for j in jobs})
    versions = {j["center"]: j["software_version"] for j in jobs if j["software_version"]}
    return StudyMeta(
        study=study_id, protocol_id=study_id, protocol_version=study["version"], protocol_hash=study["protocol_hash"],
        model_hash=study["model_hash"], adapter_hashes={}, round_dates={r: _iso(launch["started_at"]) for r in rounds},
        sites=[SiteInfo(center=c, software_version=versions.get(c), release=None)
               for c in sorted({j["center"] for j in jobs})],
        package_version=__version__,
    )


def report(home: HubHome, study_id: str, out_dir: Path, *, round_: int | None = None, blind: bool = False,
           formats: Sequence[str] = ("csv", "md", "tex", "html")) -> list[Path]:
    store = home.store()
    launch = store.latest_launch(study_id)
    frame = store.results_frame(launch["launch_id"])
    if frame.empty:
        raise DataError(f"study {study_id!r}: launch {launch['launch_id']} stored no results (see `hub launch` output)")
    return write_report(frame, Path(out_dir), study_meta(home, study_id, launch), round=round_, formats=formats,
                        blind=blind)
