"""Results store on a real SQLite file and a real PostgreSQL server: round-trips, migrations, legacy stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import hub.accounts  # noqa: F401 - its tables join the store's metadata, so the comparison covers them
from hub.home import HubHome
from hub.migrate import current_revision, head_revision
from hub.store import ResultsStore, engine_url, metadata
from protocols.errors import ConfigError
from protocols.results import COLUMNS, ResultRow
from protocols.states import LaunchState


def test_round_trip(store_url: str) -> None:
    store = ResultsStore(store_url)
    store.add_site("a", 11, "ecdsa-sha2-nistp384 AAAA")
    store.add_site("b", 12, None)
    assert store.site_nodes() == {11: "a", 12: "b"}
    assert store.revoke_site("b") == 12
    assert store.site_nodes() == {11: "a"}
    with pytest.raises(ConfigError, match="no active site"):
        store.revoke_site("b")

    store.put_study(
        study_id="s", version="1", title="t", protocol_hash="h" * 64, protocol_yaml="x", model_hash="m" * 64
    )
    store.new_launch("L1", "s", "h" * 64)
    store.set_job("L1", 0, "a", job_id="L1.r0.a", state="queued", detail=None)
    store.set_job("L1", 0, "a", job_id="L1.r0.a", state="stored", detail=None, software_version="0.1.0")
    assert [j["state"] for j in store.jobs("L1")] == ["stored"]
    row = ResultRow("s", 0, "a", "evaluate", "phase", "accuracy", 0.5, 0.4, 0.6, 6, 100, 0.0, False)
    store.add_results("L1", [row, row])  # idempotent per (launch, round, center, task, metric)
    frame = store.results_frame("L1")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 1 and frame.iloc[0]["estimate"] == 0.5
    with pytest.raises(ConfigError, match="no finished launch"):
        store.latest_launch("s")
    store.finish_launch("L1", LaunchState.FINISHED)
    assert store.latest_launch("s")["launch_id"] == "L1"
    store.new_launch("L2", "s", "h" * 64, state="pending")
    assert [launch["launch_id"] for launch in store.launches_of("s")] == ["L2", "L1"]
    store.set_launch_state("L2", "running")
    assert store.launch("L2")["state"] == "running"
    assert ResultsStore(store_url).results_frame("L1").iloc[0]["center"] == "a"  # reopening keeps the data


def test_migrations_build_the_models_schema(store_url: str) -> None:
    """Every table and column the code declares comes from a migration (a new table needs one in hub/migrations)."""
    store = ResultsStore(store_url)
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as con:
        diff = compare_metadata(MigrationContext.configure(con), metadata)
    assert diff == []


def test_store_made_before_migrations_is_stamped_and_upgraded(store_url: str) -> None:
    """A hub home made by the create_all era (baseline tables, no alembic_version) keeps its rows."""
    baseline = [metadata.tables[t] for t in ("sites", "studies", "launches", "site_jobs", "adapters", "results")]
    legacy = create_engine(engine_url(store_url))
    metadata.create_all(legacy, tables=baseline)
    with legacy.begin() as con:
        con.execute(metadata.tables["sites"].insert().values(name="old", node_id="7", added_at=1.0))
    legacy.dispose()
    store = ResultsStore(store_url)
    assert store.site_nodes() == {7: "old"}
    assert {"users", "login_tokens", "sessions", "audit_log", "alembic_version"} <= set(
        inspect(store.engine).get_table_names()
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nosuchdriver://x", "nosuchdriver://x"),
        # a server that is not there; the password never appears in the message
        ("postgresql://u:secret@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
    ],
)
def test_bad_url(url: str, shown: str) -> None:
    with pytest.raises(ConfigError, match="cannot open the results store") as info:
        ResultsStore(url)
    assert shown in str(info.value) and "secret" not in str(info.value)


def test_stores_opened_at_once_migrate_once(store_url: str) -> None:
    """hub serve, the ServerApp and hub web are separate processes that may open a new store together."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from hub.store import ResultsStore; ResultsStore(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, store_url], env=env, stderr=subprocess.PIPE) for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert current_revision(ResultsStore(store_url).engine) == head_revision()


def test_audit_anchors_are_kept_first_come_and_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main as hub_main

    home = tmp_path / "hub"
    assert hub_main(["init", "--home", str(home), "--study", "s"]) == 0
    store = HubHome(home).store()
    assert store.add_anchor("a", 1, "1" * 64) and store.add_anchor("a", 2, "2" * 64)
    assert store.add_anchor("a", 2, "2" * 64)  # the same anchor again (a retried reply)
    assert not store.add_anchor("a", 2, "f" * 64)  # a rewritten log: the first head stays
    store.add_anchor("b", 1, "b" * 64)
    assert [(r["seq"], r["head"]) for r in store.anchors("a")] == [(1, "1" * 64), (2, "2" * 64)]
    out = tmp_path / "a.anchors"
    assert hub_main(["sites", "anchors", "a", "--home", str(home), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["site"], r["seq"], r["head"]) for r in rows] == [("a", 1, "1" * 64), ("a", 2, "2" * 64)]
