"""`hub report`: read a study's latest finished launch from the store and hand the tidy table to `reports`."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hub.home import HubHome
from protocols import __version__
from protocols.errors import DataError
from protocols.study import loads_protocol
from reports import Blinder, per_center_frame, write_report
from reports.meta import SiteInfo, StudyMeta
from reports.rewards import rewards_frame, write_rewards


def _iso(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "n/a"


def study_meta(home: HubHome, study_id: str, launch: dict) -> StudyMeta:
    store = home.store()
    study = store.study(study_id)
    jobs = store.jobs(launch["launch_id"])
    versions = {j["center"]: j["software_version"] for j in jobs if j["software_version"]}
    round_dates: dict[int, str] = {}
    for job in sorted(jobs, key=lambda j: j["updated_at"]):
        round_dates[job["round"]] = _iso(job["updated_at"])  # when the round's last site finished
    adapters = {a["round"]: a["sha256"] for a in store.adapters(launch["launch_id"])}
    return StudyMeta(
        study=study_id,
        protocol_id=study_id,
        protocol_version=study["version"],
        protocol_hash=study["protocol_hash"],
        model_hash=study["model_hash"],
        adapter_hashes=adapters,
        round_dates=round_dates,
        sites=[
            SiteInfo(center=c, software_version=versions.get(c), release=None)
            for c in sorted({j["center"] for j in jobs})
        ],
        package_version=__version__,
        bootstrap_replicates=loads_protocol(study["protocol_yaml"], f"study {study_id}").privacy.bootstrap_replicates,
    )


def export_adapter(row: dict, out_dir: Path) -> Path:
    """Copy a stored round adapter (a standard PEFT directory) and check it still has the sha256 the store holds."""
    from protocols.adapters import adapter_sha256

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(row["path"], out_dir)
    digest = adapter_sha256(out_dir)
    if digest != row["sha256"]:
        raise DataError(
            f"adapter of round {row['round']} at {row['path']} hashes to {digest[:16]}..., "
            f"the store holds {row['sha256'][:16]}...: it was changed after the round"
        )
    return out_dir


def adapter_for(home: HubHome, study_id: str, round_: int) -> dict:
    store = home.store()
    launch = store.latest_launch(study_id)
    for row in store.adapters(launch["launch_id"]):
        if row["round"] == round_:
            return row
    rounds = [a["round"] for a in store.adapters(launch["launch_id"])]
    raise DataError(f"study {study_id!r}: no global adapter for round {round_}; rounds with one: {rounds}")


def latest_results(home: HubHome, study_id: str) -> tuple[dict, pd.DataFrame]:
    """The study's latest finished launch and its tidy results; a DataError when it stored none."""
    store = home.store()
    launch = store.latest_launch(study_id)
    frame = store.results_frame(launch["launch_id"])
    if frame.empty:
        raise DataError(f"study {study_id!r}: launch {launch['launch_id']} stored no results (see `hub launch` output)")
    return launch, frame


def per_center(home: HubHome, study_id: str, *, round_: int | None = None, blind: bool = False) -> pd.DataFrame:
    """The rows `hub report` writes to per_center.csv, for the API and the dashboard."""
    launch, frame = latest_results(home, study_id)
    return per_center_frame(frame, study_meta(home, study_id, launch), round=round_, blind=blind)


def report(
    home: HubHome,
    study_id: str,
    out_dir: Path,
    *,
    round_: int | None = None,
    blind: bool = False,
    formats: Sequence[str] = ("csv", "md", "tex", "html"),
    hartung_knapp: bool = False,
) -> list[Path]:
    store = home.store()
    launch, frame = latest_results(home, study_id)
    meta = study_meta(home, study_id, launch)
    paths = write_report(
        frame, Path(out_dir), meta, round=round_, formats=formats, blind=blind, hartung_knapp=hartung_knapp
    )
    # The same first-seen order as write_report's, so a center gets the same pseudonym in every file.
    blinder = Blinder([*dict.fromkeys(frame["center"]), *[s.center for s in meta.sites]], enabled=blind)
    jobs = store.jobs(launch["launch_id"])
    rewards = rewards_frame(_reward_rows(jobs, blinder))
    paths += write_rewards(rewards, Path(out_dir), f"{study_id}: GRPO rewards at the trainers")
    privacy = _privacy_table(jobs, blinder)
    if privacy is not None:
        path = Path(out_dir) / "privacy.csv"
        privacy.to_csv(path, index=False)
        paths.append(path)
    return paths


def _reward_rows(jobs: list[dict], blinder: Blinder) -> list[dict[str, object]]:
    """Each GRPO trainer's released reward statistics per round (suppressed rounds carry none)."""
    rows: list[dict[str, object]] = []
    for j in jobs:
        if j["kind"] != "train" or not j.get("rewards"):
            continue
        values = json.loads(j["rewards"])
        for key, value in sorted(values.items()):
            if key != "suppressed":
                rows.append({"round": j["round"], "center": blinder.center(j["center"]), "component": key,
                             "value": float(value)})  # fmt: skip
    return rows


def _privacy_table(jobs: list[dict], blinder: Blinder) -> pd.DataFrame | None:
    """Each DP trainer's epsilon (per video) after each round, as the site reported it."""
    rows = [
        {"round": j["round"], "center": j["center"], "epsilon": j["epsilon"]}
        for j in jobs
        if j["kind"] == "train" and j["epsilon"] is not None
    ]
    if not rows:
        return None
    table = pd.DataFrame(rows)
    table["center"] = table["center"].map(blinder.center)
    table["privacy_unit"] = "video"
    return table
