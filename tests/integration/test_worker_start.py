"""An rq worker that starts before every other service prepares the event store, since its work
horses open the store without creating tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import psycopg
import pytest

from tests.helpers import PG_DB, PG_HOST, PG_USER
from workers.worker import PreloadedWorker


def tables(schema: str) -> set[str]:
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        return {name for (name,) in rows}


@pytest.fixture(autouse=True)
def no_inherited_context(monkeypatch: Any) -> None:
    """A PreloadedWorker made here leaves the context it built for its horses; not for other tests."""
    from workers import context

    monkeypatch.setattr(context, "_inherited", None)


def worker_env(monkeypatch: Any, tmp_path: Path, fabric: Path, schema: str) -> None:
    """The BACKUP_* settings of an rq worker on the test's PostgreSQL schema."""
    for name, value in {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_EVENT_STORE": "postgres",
        "BACKUP_POSTGRES_HOST": PG_HOST,
        "BACKUP_POSTGRES_USER": PG_USER,
        "BACKUP_POSTGRES_DBNAME": PG_DB,
        "BACKUP_POSTGRES_SCHEMA": schema,
    }.items():
        monkeypatch.setenv(name, value)


def test_a_worker_started_first_creates_the_event_store_tables(
    tmp_path: Path, fabric: Path, pg_schema: str, monkeypatch: Any
) -> None:
    worker_env(monkeypatch, tmp_path, fabric, pg_schema)
    assert tables(pg_schema) == set()
    PreloadedWorker(["jobs"], connection=fakeredis.FakeRedis())
    assert {"orchestrator_events", "orchestrator_snapshots"} <= tables(pg_schema)


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
    PreloadedWorker(["jobs"], connection=fakeredis.FakeRedis())
    assert "event store not prepared" in caplog.text


def test_horses_use_the_context_the_worker_built_and_open_their_own_pool_with_one_thread(
    tmp_path: Path, fabric: Path, pg_schema: str, monkeypatch: Any
) -> None:
    import os
    import threading

    from workers import context

    worker_env(monkeypatch, tmp_path, fabric, pg_schema)
    PreloadedWorker(["jobs"], connection=fakeredis.FakeRedis())
    assert context._inherited is not None
    built = context._inherited[1]
    assert built.app.recorder.datastore.pool.closed  # type: ignore[attr-defined]  # never opened here
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the horse
        ctx = context.current()
        ok = ctx is built and ctx.app.recorder.max_notification_id() is None  # opens its own pool
        pool = ctx.app.recorder.datastore.pool  # type: ignore[attr-defined]
        # with one worker thread (a horse runs its job on one thread; each thread is started per horse)
        ok = ok and [t.name for t in threading.enumerate() if t.name.startswith(f"{pool.name}-worker")] == [
            f"{pool.name}-worker-0"
        ]
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        assert pipe.read() == "1"
    os.waitpid(pid, 0)
    assert built.app.recorder.datastore.pool.closed  # type: ignore[attr-defined]  # still unopened here
