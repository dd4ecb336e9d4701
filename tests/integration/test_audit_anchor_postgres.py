"""The audit trail anchored outside the database, on PostgreSQL: the tamperings of
tests/e2e/test_audit_anchor.py, made with raw SQL on the event store's and the read store's tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from orchestrator import Client
from tests import anchoring
from tests.anchoring import Deployment
from tests.helpers import PG_DB, PG_HOST, PG_USER, pg_client
from tests.tampering import KINDS

pytestmark = pytest.mark.integration


def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as conn:
        cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def deployment(tmp_path: Path, fabric: Path, pg_schema: str) -> Iterator[Deployment]:
    aside = f"{pg_schema}_older"

    def client(**settings: Any) -> Client:
        return cast(Client, pg_client(tmp_path, fabric, pg_schema, scheduler_interval=3600, **settings))

    def tables() -> list[str]:
        found = sql("SELECT table_name FROM information_schema.tables WHERE table_schema = ?", (pg_schema,))
        return sorted(name for (name,) in found)

    def snapshot() -> None:  # what a restore from last night's dump gives back: every table as it was
        sql(f"CREATE SCHEMA {aside}")
        for table in tables():
            sql(f"CREATE TABLE {aside}.{table} AS SELECT * FROM {pg_schema}.{table}")

    def restore() -> None:
        for table in tables():
            sql(f"TRUNCATE {pg_schema}.{table}")
            sql(f"INSERT INTO {pg_schema}.{table} SELECT * FROM {aside}.{table}")

    try:
        yield Deployment(
            client=client,
            events=sql,
            read=sql,
            events_table=f"{pg_schema}.orchestrator_events",
            id_column="notification_id",
            chain_table=f"{pg_schema}.rm_audit_chain",
            positions_table=f"{pg_schema}.follower_positions",
            witness=tmp_path / "witness",
            key=anchoring.new_key(),
            snapshot=snapshot,
            restore=restore,
        )
    finally:
        sql(f"DROP SCHEMA IF EXISTS {aside} CASCADE")


def kinds(report: anchoring.Report) -> list[tuple[str, int]]:
    return [(f.kind, f.notification_id) for f in report.findings]


def test_the_chain_table_emptied_is_named_on_postgres(deployment: Deployment) -> None:
    assert kinds(anchoring.chain_emptied(deployment)) == [("chain_truncated", 1)]


def test_the_chain_table_truncated_is_named_on_postgres(deployment: Deployment) -> None:
    kept, report = anchoring.chain_truncated(deployment)
    assert kinds(report) == [("chain_truncated", kept + 1)]


@pytest.mark.parametrize(("sealed_as", "named"), [("none", "unauthenticated"), ("copied", "forged")])
def test_a_forged_event_appended_is_named_on_postgres(deployment: Deployment, sealed_as: str, named: str) -> None:
    forged, report = anchoring.forged_appended(deployment, sealed_as)
    assert kinds(report) == [(named, forged)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_history_changed_and_its_chain_rebuilt_is_named_on_postgres(deployment: Deployment, kind: str) -> None:
    expected, report = anchoring.rebuilt_over(deployment, kind)
    found = kinds(report)
    assert [k for k, _ in found].count("witness_mismatch") == 1, found
    unsealed = {"modified": "forged", "inserted": "unauthenticated"}
    assert [f for f in found if f[0] != "witness_mismatch"] == (
        [(unsealed[kind], expected[0])] if kind in unsealed else []
    )


def test_the_database_restored_from_an_older_copy_is_named_on_postgres(deployment: Deployment) -> None:
    newest, report = anchoring.rolled_back(deployment)
    assert kinds(report) == [("rolled_back", newest)]
