"""The store's study-lifecycle queries: round deadlines, results stored with their job state at once, runs."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, insert, select, update

from hub.store import ResultsStore, launches, site_jobs, study_rounds, write_results
from protocols.errors import ConfigError
from protocols.results import ResultRow
from protocols.states import LaunchState, SiteState

OPEN_STATES = (LaunchState.PENDING.value, LaunchState.RUNNING.value)


class StudyRounds:
    """Over a ResultsStore: what `hub serve`, the coordinator and the `hub study` commands read and write."""

    def __init__(self, store: ResultsStore) -> None:
        self.store, self.engine = store, store.engine

    # -- rounds ---------------------------------------------------------------------------------
    def open_round(self, launch_id: str, round_: int, kind: str, seconds: float, now: float) -> dict[str, Any]:
        """The step's row; made (deadline = now + seconds) the first time, kept as is when a restart resumes it."""
        with self.engine.begin() as con:
            row = con.execute(select(study_rounds).where(_round(launch_id, round_, kind))).first()
            if row is None:
                con.execute(
                    insert(study_rounds).values(
                        launch_id=launch_id, round=round_, kind=kind, opened_at=now, deadline_at=now + seconds
                    )
                )
                row = con.execute(select(study_rounds).where(_round(launch_id, round_, kind))).first()
        assert row is not None
        return dict(row._mapping)

    def deadline(self, launch_id: str, round_: int, kind: str) -> float:
        with self.engine.connect() as con:
            value = con.execute(select(study_rounds.c.deadline_at).where(_round(launch_id, round_, kind))).scalar()
        return float(value) if value is not None else 0.0

    def close_round(self, launch_id: str, round_: int, kind: str, reason: str) -> None:
        """Close an open step (a closed one keeps when and why it first closed)."""
        with self.engine.begin() as con:
            con.execute(
                update(study_rounds)
                .where(_round(launch_id, round_, kind), study_rounds.c.closed_at.is_(None))
                .values(closed_at=time.time(), close_reason=reason)
            )

    def reopen_round(self, launch_id: str, round_: int, kind: str, deadline_at: float) -> None:
        with self.engine.begin() as con:
            con.execute(
                update(study_rounds)
                .where(_round(launch_id, round_, kind))
                .values(closed_at=None, close_reason=None, deadline_at=deadline_at)
            )

    def move_deadline(self, launch_id: str, round_: int, seconds: float) -> list[float]:
        """Push every open step of the round `seconds` later; returns the new deadlines."""
        with self.engine.begin() as con:
            rows = con.execute(
                select(study_rounds).where(
                    study_rounds.c.launch_id == launch_id,
                    study_rounds.c.round == round_,
                    study_rounds.c.closed_at.is_(None),
                )
            ).all()
            for row in rows:
                con.execute(
                    update(study_rounds)
                    .where(_round(launch_id, round_, row.kind))
                    .values(deadline_at=row.deadline_at + seconds)
                )
        return [row.deadline_at + seconds for row in rows]

    def rounds(self, launch_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            q = (
                select(study_rounds)
                .where(study_rounds.c.launch_id == launch_id)
                .order_by(study_rounds.c.round, study_rounds.c.kind.desc())  # train before evaluate
            )
            return [dict(r._mapping) for r in con.execute(q)]

    # -- results and jobs -----------------------------------------------------------------------
    def store_result(
        self, launch_id: str, round_: int, center: str, kind: str, rows: Iterable[ResultRow], **job: Any
    ) -> None:
        """A site's rows and its job's `stored` state in one transaction: a hub killed in between stores neither."""
        key = _job(launch_id, round_, center, kind)
        with self.engine.begin() as con:
            write_results(con, launch_id, rows)
            values = {**job, "state": SiteState.STORED.value, "detail": None, "updated_at": time.time()}
            if con.execute(update(site_jobs).where(key).values(**values)).rowcount == 0:
                con.execute(
                    insert(site_jobs).values(launch_id=launch_id, round=round_, center=center, kind=kind, **values)
                )

    def reset_job(self, launch_id: str, round_: int, center: str, kind: str, job_id: str, attempt: int) -> None:
        with self.engine.begin() as con:
            con.execute(
                update(site_jobs)
                .where(_job(launch_id, round_, center, kind))
                .values(
                    job_id=job_id, attempt=attempt, state=SiteState.PENDING.value, detail=None, updated_at=time.time()
                )
            )

    # -- launches -------------------------------------------------------------------------------
    def open_launches(self) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            q = select(launches).where(launches.c.state.in_(OPEN_STATES)).order_by(launches.c.started_at)
            return [dict(r._mapping) for r in con.execute(q)]

    def set_running(self, launch_id: str, run_id: str | None) -> None:
        with self.engine.begin() as con:
            con.execute(
                update(launches)
                .where(launches.c.launch_id == launch_id)
                .values(state=LaunchState.RUNNING.value, run_id=run_id, finished_at=None, detail=None)
            )

    def newest_launch(self, study_id: str) -> dict[str, Any]:
        found = self.store.launches_of(study_id)
        if not found:
            raise ConfigError(f"study {study_id!r} has no launch yet; run `hub launch --protocol FILE`")
        return found[0]


def _round(launch_id: str, round_: int, kind: str) -> Any:
    return and_(study_rounds.c.launch_id == launch_id, study_rounds.c.round == round_, study_rounds.c.kind == kind)


def _job(launch_id: str, round_: int, center: str, kind: str) -> Any:
    return and_(
        site_jobs.c.launch_id == launch_id,
        site_jobs.c.round == round_,
        site_jobs.c.center == center,
        site_jobs.c.kind == kind,
    )
