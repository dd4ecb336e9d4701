"""`audit verify` on PostgreSQL: each kind of tampering made with raw SQL is found and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import projections.chain
from orchestrator.audit import replay
from orchestrator.audit import verify as chain
from orchestrator.entry.cli.main import app
from tests.helpers import PG_DB, PG_HOST, PG_USER, pg_client, pg_env
from tests.tampering import KINDS, MALFORMED_POSTGRES, append_forged, small_history, tamper

pytestmark = pytest.mark.integration


def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as conn:
        cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _history(tmp_path: Path, fabric: Path, schema: str) -> int:
    with pg_client(tmp_path, fabric, schema) as client:
        head = small_history(client)
        assert client.audit_verify().clean
    return head


def _verified(tmp_path: Path, fabric: Path, schema: str, chain_only: bool = False) -> chain.Report:
    with pg_client(tmp_path, fabric, schema, start_services=False) as client:
        return client.audit_verify(chain_only=True) if chain_only else client.audit_verify()


@pytest.mark.parametrize("kind", KINDS)
def test_verify_names_each_kind_of_tampering_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str, kind: str
) -> None:
    head = _history(tmp_path, fabric, pg_schema)
    expected = tamper(kind, sql, f"{pg_schema}.orchestrator_events", "notification_id", head // 2)
    with pg_client(tmp_path, fabric, pg_schema, start_services=False) as client:
        report = client.audit_verify()
    events = [f for f in report.findings if f.kind != "read_model_mismatch"]  # a changed history replays differently
    assert {(f.kind, f.notification_id) for f in events} == {(kind, n) for n in expected}


@pytest.mark.parametrize("kept", [0, 2], ids=["deleted", "cut_to_its_first_rows"])
def test_finding_10_a_chain_table_cut_short_is_chain_truncated_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str, kept: int
) -> None:
    """After an event is changed, the chain table is emptied (or cut to its first rows: kept * head / 4)."""
    head = _history(tmp_path, fabric, pg_schema)
    first_cut = _stored_from(pg_schema, kept * head // 4 + 1)
    tamper("modified", sql, f"{pg_schema}.orchestrator_events", "notification_id", _stored_from(pg_schema, head - 3))
    sql(f"DELETE FROM {pg_schema}.rm_audit_chain WHERE notification_id >= ?", (first_cut,))
    report = _verified(tmp_path, fabric, pg_schema)
    assert [(f.kind, f.notification_id) for f in report.findings] == [("chain_truncated", first_cut)]
    assert f"{first_cut} to {head}" in report.findings[0].detail and report.unchained == 0


def test_finding_10_verify_does_not_chain_forged_events_appended_at_the_end_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    head = _history(tmp_path, fabric, pg_schema)
    forged = append_forged(sql, f"{pg_schema}.orchestrator_events", "notification_id", head // 2)
    env = {**pg_env(tmp_path, fabric, pg_schema), "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["audit", "verify", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    [(events,)] = sql(f"SELECT COUNT(*) FROM {pg_schema}.orchestrator_events WHERE notification_id <= ?", (head,))
    assert (report["chained"], report["unchained"], report["head_position"]) == (events, 1, head)
    assert sql(f"SELECT MAX(notification_id) FROM {pg_schema}.rm_audit_chain") == [(head,)] and forged > head


def _stored_from(schema: str, notification_id: int) -> int:
    """The first event stored at or after `notification_id` (PostgreSQL's ids have gaps)."""
    [(found,)] = sql(
        f"SELECT MIN(notification_id) FROM {schema}.orchestrator_events WHERE notification_id >= ?", (notification_id,)
    )
    return int(found)


def _checkpoint(schema: str) -> int:
    [(first,)] = sql(
        f"SELECT MIN(notification_id) FROM {schema}.orchestrator_events WHERE topic = ?",
        ("backup.audit_checkpoint.created",),
    )
    return int(first)


@pytest.mark.parametrize("malformation", [*MALFORMED_POSTGRES, "checkpoint_state_not_json"])
def test_finding_11_each_malformed_row_is_a_named_finding_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str, malformation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections.chain, "CHECKPOINT_EVERY", 20)
    head = _history(tmp_path, fabric, pg_schema)
    assignment, column = MALFORMED_POSTGRES.get(malformation, ("state = convert_to('not json', 'UTF8')", "state"))
    target = _checkpoint(pg_schema) if malformation.startswith("checkpoint") else _stored_from(pg_schema, head // 2)
    sql(f"UPDATE {pg_schema}.orchestrator_events SET {assignment} WHERE notification_id = ?", (target,))
    report = _verified(tmp_path, fabric, pg_schema)
    [malformed] = [f for f in report.findings if f.kind == "malformed"]
    assert malformed.notification_id == target and column in malformed.detail
    assert {f.notification_id for f in report.findings if f.kind != "checkpoint_mismatch"} == {target}
    assert report.read_models == 0 and "malformed" in report.read_models_skipped


def test_finding_12_a_changed_read_model_is_a_read_model_mismatch_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    _history(tmp_path, fabric, pg_schema)
    [(point,)] = sql(f"SELECT recovery_point_id FROM {pg_schema}.rm_recovery_points ORDER BY 1 LIMIT 1")
    [(job,)] = sql(f"SELECT job_id FROM {pg_schema}.rm_jobs ORDER BY 1 LIMIT 1")
    sql(f"DELETE FROM {pg_schema}.rm_recovery_points WHERE recovery_point_id = ?", (point,))
    sql(f"UPDATE {pg_schema}.rm_jobs SET status = 'failed' WHERE job_id = ?", (job,))
    report = _verified(tmp_path, fabric, pg_schema)
    found = {f.table: f.detail for f in report.findings if f.kind == "read_model_mismatch"}
    assert len(report.findings) == 2 and set(found) == {"rm_jobs", "rm_recovery_points"}
    assert point in found["rm_recovery_points"] and job in found["rm_jobs"]
    assert _verified(tmp_path, fabric, pg_schema, chain_only=True).clean


def test_as_of_and_replay_after_ten_thousand_events_on_postgres(tmp_path: Path, fabric: Path, pg_schema: str) -> None:
    from tests.scripted import TARGET_EVENTS, run_script, snapshot

    with pg_client(tmp_path, fabric, pg_schema, scheduler_interval=3600) as client:
        captured = run_script(client)
        head = client._runtime.app.recorder.max_notification_id() or 0
        assert head >= TARGET_EVENTS
        for instant, expected in captured:
            with client.as_of(instant) as past:
                assert snapshot(past) == expected, instant
        replayed = client.audit_replay()  # every stored event read (ids may have gaps on PostgreSQL)
        assert replayed.equal and not replayed.differences
        assert replayed.events == sum(map(len, replay.sections(client._runtime.app, head))) >= TARGET_EVENTS
        assert client.audit_verify().clean


def test_eight_threads_backing_up_one_vm_start_one_backup_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    from tests.e2e.test_concurrent_backup import check_exactly_one, protected_vm

    with pg_client(tmp_path, fabric, pg_schema, scheduler_interval=3600) as client:
        check_exactly_one(client, protected_vm(client), "vm01", runs=True)


def test_the_events_table_has_the_columns_audit_rows_reads_on_postgres(
    tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    """projections/stored_rows.py reads the library's table as stored: a change of its layout fails here."""
    from projections.stored_rows import identity, read_rows

    with pg_client(tmp_path, fabric, pg_schema, start_services=False) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.set_replication(vault, "local")
        app = client._runtime.app
        head = app.recorder.max_notification_id() or 0
        stored = read_rows(app, 1, head, head)
        notifications = [n for section in replay.sections(app, head) for n in section]
    columns = sql(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        (pg_schema, "orchestrator_events"),
    )
    assert dict(columns) == {
        "originator_id": "uuid",
        "originator_version": "bigint",
        "topic": "text",
        "state": "bytea",
        "notification_id": "bigint",
    }
    assert len(stored) == len(notifications) >= 2
    for row, n in zip(stored, notifications, strict=True):
        assert row.notification_id == n.id
        assert identity(row) == (str(n.originator_id), n.originator_version, n.topic)
        assert row.state == ("blob", n.state)
