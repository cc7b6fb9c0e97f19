"""The hub's results store (SQLAlchemy, by URL): sites, studies, launches, site jobs and tidy per-site results."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url

from hub.migrate import upgrade_schema
from protocols.errors import ConfigError
from protocols.results import COLUMNS, ResultRow
from protocols.states import LaunchState

metadata = MetaData()

sites = Table(
    "sites",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("node_id", String(20), unique=True, nullable=True),  # Flower node ids are unsigned 64-bit
    Column("public_key", Text, nullable=True),
    Column("added_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)
studies = Table(
    "studies",
    metadata,
    Column("study_id", String(64), primary_key=True),
    Column("version", String(32), nullable=False),
    Column("title", Text, nullable=False),
    Column("protocol_hash", String(64), nullable=False),
    Column("protocol_yaml", Text, nullable=False),
    Column("model_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)
launches = Table(
    "launches",
    metadata,
    Column("launch_id", String(64), primary_key=True),
    Column("study_id", String(64), nullable=False),
    Column("protocol_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # protocols.states.LaunchState
    Column("detail", Text, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("run_id", String(32), nullable=True),  # the Flower run now driving it (a resumed launch gets a new one)
)
site_jobs = Table(
    "site_jobs",
    metadata,
    Column("launch_id", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("center", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # evaluate | train
    Column("job_id", String(160), nullable=False),
    Column("state", String(24), nullable=False),  # protocols.states.SiteState
    Column("detail", Text, nullable=True),
    Column("software_version", String(32), nullable=True),
    Column("epsilon", Float, nullable=True),  # a DP trainer's spent epsilon for the study, as it reported
    Column("rewards", Text, nullable=True),  # a GRPO trainer's released reward statistics (JSON of the grpo record)
    Column("updated_at", Float, nullable=False),
    Column("attempt", Integer, nullable=True),  # 0 (None) first; a rerun after a failure asks under a new job id
    UniqueConstraint("launch_id", "round", "center", "kind"),
)
# Each step's (round, kind) own deadline, kept so a restarted hub resumes it and `hub study extend` moves it.
study_rounds = Table(
    "study_rounds",
    metadata,
    Column("launch_id", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("deadline_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("close_reason", Text, nullable=True),
    UniqueConstraint("launch_id", "round", "kind"),
)
# Each fine-tuning round's global adapter: a PEFT directory at the hub and its sha256.
adapters = Table(
    "adapters",
    metadata,
    Column("launch_id", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("num_examples", Integer, nullable=False),
    Column("sites", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("launch_id", "round"),
)
# Only per-site aggregates: one row per released (or suppressed) number. No file names, no per-frame data.
results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("launch_id", String(64), nullable=False),
    Column("study", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("center", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("task", String(32), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("estimate", Float, nullable=True),
    Column("ci_low", Float, nullable=True),
    Column("ci_high", Float, nullable=True),
    Column("n_videos", Integer, nullable=True),
    Column("n_frames", Integer, nullable=True),
    Column("parse_fail_rate", Float, nullable=True),
    Column("suppressed", Boolean, nullable=False),
    Column("se_pooling", Float, nullable=True),  # the site's SE on pooling_scale (contract 2)
    Column("pooling_scale", String(16), nullable=True),
    Column("undefined_share", Float, nullable=True),
    UniqueConstraint("launch_id", "round", "center", "task", "metric"),
)
# Each site's audit-log anchors: (seq, head hash) as they came with its released replies. The site cannot
# take them back, so a truncated or rewritten log no longer matches them (`site_node audit verify --anchors`).
audit_anchors = Table(
    "audit_anchors",
    metadata,
    Column("center", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("head", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("center", "seq"),
)


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (the pinned driver), not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as it came
        return url


class ResultsStore:
    """The store at a SQLAlchemy URL; opening it applies the schema migrations it lacks (hub/migrations/)."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        try:
            self.engine: Engine = create_engine(self.url, future=True, pool_pre_ping=True)
            upgrade_schema(self.engine)
        except Exception as exc:  # noqa: BLE001 - any driver error becomes a config error naming the URL
            raise ConfigError(f"cannot open the results store {shown_url(url)!r}: {exc}") from exc

    # -- sites ---------------------------------------------------------------------------------
    def add_anchor(self, center: str, seq: int, head: str) -> bool:
        """Keep a site's (seq, head); the first one received for a seq stays. False when the site sent another."""
        with self.engine.begin() as con:
            known = con.execute(
                select(audit_anchors.c.head).where(audit_anchors.c.center == center, audit_anchors.c.seq == seq)
            ).first()
            if known is None:
                con.execute(insert(audit_anchors).values(center=center, seq=seq, head=head, received_at=time.time()))
            return known is None or known[0] == head

    def anchors(self, center: str) -> list[dict[str, Any]]:
        with self.engine.begin() as con:
            rows = con.execute(
                select(audit_anchors).where(audit_anchors.c.center == center).order_by(audit_anchors.c.seq)
            )
            return [dict(r._mapping) for r in rows]

    def add_site(self, name: str, node_id: int | None, public_key: str | None) -> None:
        with self.engine.begin() as con:
            con.execute(delete(sites).where(sites.c.name == name))
            con.execute(
                insert(sites).values(
                    name=name,
                    node_id=None if node_id is None else str(node_id),
                    public_key=public_key,
                    added_at=time.time(),
                )
            )

    def revoke_site(self, name: str) -> int | None:
        with self.engine.begin() as con:
            row = con.execute(select(sites.c.node_id).where(sites.c.name == name, sites.c.revoked_at.is_(None))).first()
            if row is None:
                raise ConfigError(f"no active site named {name!r}; see `hub sites list`")
            con.execute(update(sites).where(sites.c.name == name).values(revoked_at=time.time(), node_id=None))
            return None if row.node_id is None else int(row.node_id)

    def site_nodes(self) -> dict[int, str]:
        """node id -> site name, for active (registered, not revoked) sites."""
        with self.engine.connect() as con:
            rows = con.execute(select(sites.c.name, sites.c.node_id).where(sites.c.revoked_at.is_(None)))
            return {int(r.node_id): r.name for r in rows if r.node_id is not None}

    def list_sites(self) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(select(sites).order_by(sites.c.name))]

    # -- studies and launches ---------------------------------------------------------------------
    def put_study(self, **values: Any) -> None:
        with self.engine.begin() as con:
            con.execute(delete(studies).where(studies.c.study_id == values["study_id"]))
            con.execute(insert(studies).values(created_at=time.time(), **values))

    def study(self, study_id: str) -> dict[str, Any]:
        with self.engine.connect() as con:
            row = con.execute(select(studies).where(studies.c.study_id == study_id)).first()
        if row is None:
            raise ConfigError(f"unknown study {study_id!r}; known: {self.study_ids()}")
        return dict(row._mapping)

    def study_ids(self) -> list[str]:
        with self.engine.connect() as con:
            return [r.study_id for r in con.execute(select(studies.c.study_id))]

    def new_launch(self, launch_id: str, study_id: str, protocol_hash: str, state: str = "running") -> None:
        with self.engine.begin() as con:
            con.execute(
                insert(launches).values(
                    launch_id=launch_id,
                    study_id=study_id,
                    protocol_hash=protocol_hash,
                    state=LaunchState(state).value,
                    started_at=time.time(),
                )
            )

    def launch(self, launch_id: str) -> dict[str, Any]:
        with self.engine.connect() as con:
            row = con.execute(select(launches).where(launches.c.launch_id == launch_id)).first()
        if row is None:
            raise ConfigError(f"unknown launch {launch_id!r}")
        return dict(row._mapping)

    def finish_launch(self, launch_id: str, state: LaunchState, detail: str | None = None) -> None:
        with self.engine.begin() as con:
            con.execute(
                update(launches)
                .where(launches.c.launch_id == launch_id)
                .values(state=LaunchState(state).value, detail=detail, finished_at=time.time())
            )

    def set_launch_state(self, launch_id: str, state: str) -> None:
        with self.engine.begin() as con:
            con.execute(update(launches).where(launches.c.launch_id == launch_id).values(state=state))

    def launches_of(self, study_id: str) -> list[dict[str, Any]]:
        """Every launch of a study, newest first."""
        with self.engine.connect() as con:
            q = select(launches).where(launches.c.study_id == study_id).order_by(launches.c.started_at.desc())
            return [dict(r._mapping) for r in con.execute(q)]

    def latest_launch(self, study_id: str) -> dict[str, Any]:
        with self.engine.connect() as con:
            row = con.execute(
                select(launches)
                .where(launches.c.study_id == study_id, launches.c.state == LaunchState.FINISHED.value)
                .order_by(launches.c.started_at.desc())
            ).first()
        if row is None:
            raise ConfigError(f"study {study_id!r} has no finished launch yet; run `hub launch`")
        return dict(row._mapping)

    # -- site jobs ------------------------------------------------------------------------------
    def set_job(self, launch_id: str, round_: int, center: str, *, kind: str = "evaluate", **values: Any) -> None:
        key = (
            (site_jobs.c.launch_id == launch_id)
            & (site_jobs.c.round == round_)
            & (site_jobs.c.center == center)
            & (site_jobs.c.kind == kind)
        )
        with self.engine.begin() as con:
            if con.execute(select(site_jobs.c.center).where(key)).first() is None:
                con.execute(
                    insert(site_jobs).values(
                        launch_id=launch_id, round=round_, center=center, kind=kind, updated_at=time.time(), **values
                    )
                )
            else:
                con.execute(update(site_jobs).where(key).values(updated_at=time.time(), **values))

    def jobs_for_study(self, study_id: str) -> list[dict[str, Any]]:
        """Site jobs of every launch of a study, newest launch first."""
        with self.engine.connect() as con:
            q = (
                select(site_jobs)
                .join(launches, launches.c.launch_id == site_jobs.c.launch_id)
                .where(launches.c.study_id == study_id)
                .order_by(launches.c.started_at.desc(), site_jobs.c.center)
            )
            return [dict(r._mapping) for r in con.execute(q)]

    def jobs(self, launch_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            q = (
                select(site_jobs)
                .where(site_jobs.c.launch_id == launch_id)
                .order_by(site_jobs.c.round, site_jobs.c.center)
            )
            return [dict(r._mapping) for r in con.execute(q)]

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, launch_id: str, round_: int, sha256: str, path: str, num_examples: int, sites: str) -> None:
        with self.engine.begin() as con:
            con.execute(delete(adapters).where((adapters.c.launch_id == launch_id) & (adapters.c.round == round_)))
            con.execute(
                insert(adapters).values(
                    launch_id=launch_id,
                    round=round_,
                    sha256=sha256,
                    path=path,
                    num_examples=num_examples,
                    sites=sites,
                    created_at=time.time(),
                )
            )

    def adapters(self, launch_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            q = select(adapters).where(adapters.c.launch_id == launch_id).order_by(adapters.c.round)
            return [dict(r._mapping) for r in con.execute(q)]

    # -- results --------------------------------------------------------------------------------
    def add_results(self, launch_id: str, rows: Iterable[ResultRow]) -> None:
        with self.engine.begin() as con:
            write_results(con, launch_id, rows)

    def results_frame(self, launch_id: str) -> pd.DataFrame:
        with self.engine.connect() as con:
            rows = con.execute(
                select(*[results.c[c] for c in COLUMNS])
                .where(results.c.launch_id == launch_id)
                .order_by(results.c.round, results.c.center, results.c.task, results.c.metric)
            ).all()
        return pd.DataFrame([dict(r._mapping) for r in rows], columns=list(COLUMNS))


def write_results(con: Connection, launch_id: str, rows: Iterable[ResultRow]) -> None:
    """Insert result rows, replacing any row of the same (launch, round, center, task, metric): idempotent."""
    for row in rows:
        con.execute(
            delete(results).where(
                (results.c.launch_id == launch_id)
                & (results.c.round == row.round)
                & (results.c.center == row.center)
                & (results.c.task == row.task)
                & (results.c.metric == row.metric)
            )
        )
        con.execute(insert(results).values(launch_id=launch_id, **asdict(row)))
