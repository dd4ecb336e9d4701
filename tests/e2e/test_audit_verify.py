"""`audit verify` finds each kind of tampering with the stored history (SQLite here; the same on
PostgreSQL in tests/integration/test_audit_postgres.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import projections.chain
from orchestrator import Client
from orchestrator.entry.cli.main import app
from orchestrator.write.application import SNAPSHOT_INTERVAL
from tests.tampering import KINDS, small_history, tamper


def _sqlite(path: Path) -> Any:
    def sql(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as con:
            return con.execute(statement, params).fetchall()

    return sql


@pytest.mark.parametrize("kind", KINDS)
def test_verify_names_each_kind_of_tampering(tmp_path: Path, fabric: Path, kind: str) -> None:
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric, principal="alice") as client:
        head = small_history(client)
        clean = client.audit_verify()
        assert clean.clean and clean.chained == head and clean.head_position == head
    expected = tamper(kind, _sqlite(data / "events.sqlite"), "stored_events", "rowid", head // 2)

    env = {"BACKUP_DATA_DIR": str(data), "BACKUP_FABRIC": str(fabric), "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["audit", "verify", "--json"], env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert not report["clean"]
    # A changed history may also replay into read models other than the live ones (read_model_mismatch).
    events = [f for f in report["findings"] if f["kind"] != "read_model_mismatch"]
    assert {(f["kind"], f["notification_id"]) for f in events} == {(kind, n) for n in expected}
    table = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert table.exit_code == 1 and f"{kind}: notification {expected[0]}" in table.output


def test_an_untampered_history_verifies_and_matches_a_kept_head(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric, principal="alice") as client:
        small_history(client)
        report = client.audit_verify()
        assert report.clean and report.unchained == 0
        kept = (report.head_position, report.head_hash)
        assert client.audit_verify(expect=kept).clean
        assert not client.audit_verify(expect=(kept[0], "0" * 64)).clean
    env = {"BACKUP_DATA_DIR": str(data), "BACKUP_FABRIC": str(fabric)}
    result = CliRunner().invoke(app, ["audit", "verify", "--expect", f"{kept[0]}:{kept[1]}"], env=env)
    assert result.exit_code == 0 and "clean" in result.output, result.output


def test_the_chain_records_checkpoints_in_the_history(tmp_path: Path, fabric: Path, monkeypatch: Any) -> None:

    monkeypatch.setattr(projections.chain, "CHECKPOINT_EVERY", 20)
    with Client(data_dir=tmp_path / "data", fabric=fabric, principal="alice") as client:
        small_history(client)
        head = client._runtime.app.recorder.max_notification_id() or 0
        assert client._runtime.store.wait(["audit_chain"], head, 30)
        report = client.audit_verify()
        assert report.clean and report.checkpoints >= 2
        events = client._runtime.app.recorder.select_notifications(  # those verify read (the chain goes on)
            start=1, limit=10000, stop=report.checked, topics=["backup.audit_checkpoint.created"]
        )
        assert len(events) == report.checkpoints


def test_verify_checks_each_snapshot_against_its_events(tmp_path: Path, fabric: Path) -> None:
    """A command loads an aggregate from its latest snapshot: a snapshot changed by raw SQL is named."""
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric, principal="alice") as client:
        vault = client.create_vault("vault-snap", "japaneast", "rg")
        for i in range(SNAPSHOT_INTERVAL):
            client.set_replication(vault, "local" if i % 2 == 0 else "geo")
        report = client.audit_verify()
        assert report.clean and report.snapshots == 1
    sql = _sqlite(data / "events.sqlite")
    [(state,)] = sql("SELECT state FROM stored_snapshots WHERE originator_id = ?", (vault.replace("-", ""),))
    assert b'"replication":"local"' in bytes(state)
    sql(
        "UPDATE stored_snapshots SET state = ?",
        (bytes(state).replace(b'"replication":"local"', b'"replication":"geo"'),),
    )
    env = {"BACKUP_DATA_DIR": str(data), "BACKUP_FABRIC": str(fabric), "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["audit", "verify", "--json"], env=env)
    assert result.exit_code == 1, result.output
    [finding] = json.loads(result.output)["findings"]
    assert (finding["kind"], finding["originator_id"], finding["originator_version"]) == (
        "snapshot_mismatch",
        vault,
        SNAPSHOT_INTERVAL,
    )
    sql("UPDATE stored_snapshots SET state = ?", (b"not json",))
    with Client(data_dir=data, fabric=fabric, principal="alice") as client:
        [unreadable] = client.audit_verify().findings
    assert unreadable.kind == "snapshot_mismatch" and "does not read back" in unreadable.detail
