"""Pooled PostgreSQL connections are checked before use by their socket, and pinged only in doubt:
one the server dropped is replaced without an error, a live one costs no round trip."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator import pgpool
from orchestrator.bootstrap import build_app
from orchestrator.config import load_settings
from projections.store import ReadStore
from tests.helpers import PG_DB, PG_HOST, PG_USER

pytestmark = pytest.mark.integration


def backend_pid(datastore: Any) -> int:
    with datastore.get_connection() as conn:
        return int(conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])


def terminate_pooled(datastore: Any) -> set[int]:
    """End the server side of every idle connection in the pool, as a restart would."""
    pooled = list(datastore.pool._pool)
    pids = {conn.info.backend_pid for conn in pooled}
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for conn in pooled:  # until each backend's goodbye has reached its pooled connection's socket
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        assert poller.poll(10_000), "the terminated backend's socket never became readable"
    return pids


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    real = pgpool.ping

    def counting(conn: Any) -> None:
        calls.append(conn)
        real(conn)

    monkeypatch.setattr(pgpool, "ping", counting)
    return calls


def test_a_read_store_replaces_a_dropped_connection_and_pings_no_live_one(pg_schema: str, pings: list[object]) -> None:
    store = ReadStore.postgres(host=PG_HOST, port="5432", user=PG_USER, password="", dbname=PG_DB, schema=pg_schema)
    try:
        assert store.datastore.pool._check is pgpool.check_when_in_doubt  # type: ignore[attr-defined]
        for _ in range(5):
            backend_pid(store.datastore)
            assert store.position("nobody") == 0
        assert pings == []
        dropped = terminate_pooled(store.datastore)
        assert store.position("nobody") == 0  # no error: the pool replaced the dropped connection
        assert backend_pid(store.datastore) not in dropped
        assert len(pings) == len(dropped) >= 1
    finally:
        store.close()


def test_the_event_store_replaces_a_dropped_connection(
    tmp_path: Path, fabric: Path, pg_schema: str, pings: list[object]
) -> None:
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
        pings.clear()
        for _ in range(5):
            assert app.recorder.max_notification_id() in (None, 0)
        assert pings == []
        dropped = terminate_pooled(datastore)
        assert app.recorder.max_notification_id() in (None, 0)  # no error
        assert backend_pid(datastore) not in dropped
        assert len(pings) == len(dropped) >= 1
    finally:
        app.close()
