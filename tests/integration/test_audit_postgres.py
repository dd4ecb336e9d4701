"""`audit verify` on PostgreSQL: each kind of tampering made with raw SQL is found and named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator import Client
from orchestrator.audit import replay
from tests.helpers import PG_DB, PG_HOST, PG_USER
from tests.tampering import KINDS, small_history, tamper

pytestmark = pytest.mark.integration


def pg_client(tmp_path: Path, fabric: Path, schema: str, **extra: Any) -> Client:
    """The embedded queue on the real PostgreSQL, in a schema of the test's own."""
    return Client(data_dir=tmp_path / "data", fabric=fabric, event_store="postgres", postgres_host=PG_HOST,
                  postgres_user=PG_USER, postgres_dbname=PG_DB, postgres_schema=schema, principal="alice", **extra)


@pytest.mark.parametrize("kind", KINDS)
def test_verify_names_each_kind_of_tampering_on_postgres(tmp_path: Path, fabric: Path, pg_schema: str,
                                                         kind: str) -> None:
    with pg_client(tmp_path, fabric, pg_schema) as client:
        head = small_history(client)
        assert client.audit_verify().clean

    def sql(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    expected = tamper(kind, sql, f"{pg_schema}.orchestrator_events", "notification_id", head // 2)
    with pg_client(tmp_path, fabric, pg_schema, start_services=False) as client:
        report = client.audit_verify()
    assert {(f.kind, f.notification_id) for f in report.findings} == {(kind, n) for n in expected}


def test_as_of_and_replay_after_ten_thousand_events_on_postgres(tmp_path: Path, fabric: Path, pg_schema: str) -> None:
    from tests.scripted import TARGET_EVENTS, run_script, snapshot

    with pg_client(tmp_path, fabric, pg_schema, scheduler_interval=3600, replay_processes=2) as client:
        captured = run_script(client)
        head = client._runtime.app.recorder.max_notification_id() or 0
        assert head >= TARGET_EVENTS
        for instant, expected in captured:
            with client.as_of(instant) as past:
                assert snapshot(past) == expected, instant
        replayed = client.audit_replay()  # split over two processes (the events counted on PostgreSQL)
        assert replayed.equal and not replayed.differences
        assert replayed.events == sum(replay.topic_counts(client._runtime.app, head).values()) >= TARGET_EVENTS
        assert client.audit_verify().clean


def test_eight_threads_backing_up_one_vm_start_one_backup_on_postgres(tmp_path: Path, fabric: Path,
                                                                      pg_schema: str) -> None:
    from tests.e2e.test_concurrent_backup import check_exactly_one, protected_vm

    with pg_client(tmp_path, fabric, pg_schema, scheduler_interval=3600) as client:
        check_exactly_one(client, protected_vm(client), "vm01", runs=True)
