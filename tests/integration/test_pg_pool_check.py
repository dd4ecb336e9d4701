"""Pooled PostgreSQL connections are checked before use (the library's pre-ping): one the server
dropped (a restart, an idle timeout) is replaced without an error, in the read store and the event
store alike."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.config import load_settings
from orchestrator.runtime.bootstrap import build_app
from projections.store import ReadStore
from tests.helpers import PG_DB, PG_HOST, PG_USER

pytestmark = pytest.mark.integration


def backend_pid(datastore: Any) -> int:
    with datastore.get_connection() as conn:
        return int(conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])


def terminate(pid: int) -> None:
    """End the server side of a pooled connection, as a restart would, and wait until it is gone
    (only this test's own: other tests share the server)."""
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the terminated backend never went"
            time.sleep(0.05)
    time.sleep(0.2)  # its goodbye reaches the pooled connection's socket


def test_a_read_store_replaces_a_dropped_connection(pg_schema: str) -> None:
    store = ReadStore.postgres(host=PG_HOST, port="5432", user=PG_USER, password="", dbname=PG_DB, schema=pg_schema)
    try:
        dropped = {backend_pid(store.datastore) for _ in range(3)}  # the pool's idle connections
        for pid in dropped:
            terminate(pid)
        for _ in range(3):
            assert store.position("nobody") == 0  # no error: the pool replaced the dropped connections
            assert backend_pid(store.datastore) not in dropped
    finally:
        store.close()


def test_the_event_store_replaces_a_dropped_connection(tmp_path: Path, fabric: Path, pg_schema: str) -> None:
    settings = load_settings(
        {},
        data_dir=tmp_path / "data",
        fabric=fabric,
        event_store="postgres",
        postgres_host=PG_HOST,
        postgres_user=PG_USER,
        postgres_dbname=PG_DB,
        postgres_schema=pg_schema,
    )
    app = build_app(settings)
    try:
        datastore = app.recorder.datastore  # type: ignore[attr-defined]
        dropped = {backend_pid(datastore) for _ in range(3)}
        for pid in dropped:
            terminate(pid)
        for _ in range(3):
            assert app.recorder.max_notification_id() in (None, 0)  # no error
            assert backend_pid(datastore) not in dropped
    finally:
        app.close()
