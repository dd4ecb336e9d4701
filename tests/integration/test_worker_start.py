"""An rq worker that starts before every other service prepares the event store; one whose store is
not up still starts (and builds its context once the store answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import psycopg

from orchestrator.runtime.worker import ProcessWorker
from tests.helpers import PG_DB, PG_HOST, PG_USER, pg_env


def tables(schema: str) -> set[str]:
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        return {name for (name,) in rows}


def worker_env(monkeypatch: Any, tmp_path: Path, fabric: Path, schema: str) -> None:
    """The BACKUP_* settings of an rq worker on the test's PostgreSQL schema."""
    for name, value in pg_env(tmp_path, fabric, schema).items():
        monkeypatch.setenv(name, value)


def test_a_worker_started_first_creates_the_event_store_tables(
    tmp_path: Path, fabric: Path, pg_schema: str, monkeypatch: Any
) -> None:
    worker_env(monkeypatch, tmp_path, fabric, pg_schema)
    assert tables(pg_schema) == set()
    worker = ProcessWorker(["jobs"], connection=fakeredis.FakeRedis())
    try:
        assert {"orchestrator_events", "orchestrator_snapshots"} <= tables(pg_schema)
    finally:
        worker.teardown()


def test_a_worker_whose_store_is_not_up_still_starts(
    tmp_path: Path, fabric: Path, monkeypatch: Any, caplog: Any
) -> None:
    for name, value in {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_EVENT_STORE": "postgres",
        "BACKUP_POSTGRES_HOST": "127.0.0.1",
        "BACKUP_POSTGRES_PORT": "1",
    }.items():  # nothing listens there
        monkeypatch.setenv(name, value)
    worker = ProcessWorker(["jobs"], connection=fakeredis.FakeRedis())
    assert "event store not prepared" in caplog.text
    assert worker.context is None and not worker.stores_answer()  # no job is taken meanwhile
