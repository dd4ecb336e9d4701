"""`audit verify` on what issue 14 found it missed (SQLite here; PostgreSQL in
tests/integration/test_audit_postgres.py): a chain table cut short (finding 10), stored rows that do
not read back (finding 11), read models changed in the database (finding 12)."""

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
from projections.chain import ChainFollower
from projections.runner import PROJECTIONS
from tests.tampering import MALFORMED_SQLITE, append_forged, small_history, tamper

EVENTS, CHAIN = "stored_events", "rm_audit_chain"
KEY = "u3sQnUNl0e4Xp6yUVi7Jw2zB3H4C6cDq0P2M8eCzXlU="
READ_MODELS = sum(len(cls.owned) for cls in PROJECTIONS)  # tables


def _sql(path: Path) -> Any:
    def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as con:
            return con.execute(statement, params).fetchall()

    return sql


def _history(data: Path, fabric: Path, **settings: Any) -> int:
    with Client(data_dir=data, fabric=fabric, principal="alice", **settings) as client:
        head = small_history(client)
        assert client.audit_verify().clean
    return head


def _verify(data: Path, fabric: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    """`backupctl audit verify --json`: its exit code and report (never a traceback)."""
    settings = {"BACKUP_DATA_DIR": str(data), "BACKUP_FABRIC": str(fabric), "COLUMNS": "250", **env}
    result = CliRunner().invoke(app, ["audit", "verify", "--json", *args], env=settings)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def _kinds(report: dict[str, Any]) -> list[tuple[str, int]]:
    return [(f["kind"], f["notification_id"]) for f in report["findings"]]


# Finding 10: the chain table cut short, and `audit verify` extending the chain itself.


def test_finding_10_deleting_the_chain_table_is_chain_truncated(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric)
    events = _sql(data / "events.sqlite")
    [(middle,)] = events(  # an event no read model shows the principal of: the chain alone could tell
        f"SELECT min(rowid) FROM {EVENTS} WHERE topic = 'backup.vm.protection_requested' AND rowid >= ?", (head // 2,)
    )
    tamper("modified", events, EVENTS, "rowid", middle)
    _sql(data / "readmodels.sqlite")(f"DELETE FROM {CHAIN}")
    code, report = _verify(data, fabric)
    assert code == 1
    assert _kinds(report) == [("chain_truncated", 1)]
    assert (report["chained"], report["unchained"], report["reach"]) == (0, 0, head)
    assert f"1 to {head}" in report["findings"][0]["detail"]


def test_finding_10_truncating_the_chain_to_its_first_rows_is_found(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric)
    kept = head // 2
    tamper("modified", _sql(data / "events.sqlite"), EVENTS, "rowid", kept + 3)
    _sql(data / "readmodels.sqlite")(f"DELETE FROM {CHAIN} WHERE notification_id > ?", (kept,))
    code, report = _verify(data, fabric)
    assert code == 1
    assert _kinds(report) == [("chain_truncated", kept + 1)]
    assert (report["chained"], report["unchained"]) == (kept, 0)
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        [finding] = client.audit_verify().findings
    assert finding.kind == "chain_truncated" and f"{kept + 1} to {head}" in finding.detail


def test_finding_10_a_checkpoint_alone_says_how_far_the_chain_reached(
    tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower's position deleted too: the newest AuditCheckpoint event still marks the reach."""
    monkeypatch.setattr(projections.chain, "CHECKPOINT_EVERY", 20)
    data = tmp_path / "data"
    _history(data, fabric)
    [(state,)] = _sql(data / "events.sqlite")(
        f"SELECT state FROM {EVENTS} WHERE topic = ? ORDER BY rowid DESC LIMIT 1", ("backup.audit_checkpoint.created",)
    )
    reach = json.loads(state)["position"]
    read_store = _sql(data / "readmodels.sqlite")
    read_store(f"DELETE FROM {CHAIN} WHERE notification_id > 10")
    read_store("DELETE FROM follower_positions WHERE follower = 'audit_chain'")
    code, report = _verify(data, fabric)
    assert code == 1 and _kinds(report) == [("chain_truncated", 11)]
    assert report["reach"] == reach and f"11 to {reach}" in report["findings"][0]["detail"]


def test_finding_10_deleting_chain_rows_in_the_middle_is_chain_truncated(tmp_path: Path, fabric: Path) -> None:
    """The events are as chained (the chain goes on from them): their rows were deleted, nothing inserted."""
    data = tmp_path / "data"
    head = _history(data, fabric)
    _sql(data / "readmodels.sqlite")(f"DELETE FROM {CHAIN} WHERE notification_id BETWEEN 5 AND 9")
    code, report = _verify(data, fabric)
    assert code == 1 and _kinds(report) == [("chain_truncated", 5)]
    assert "5 to 9" in report["findings"][0]["detail"] and report["chained"] == head - 5


def test_finding_10_verify_does_not_chain_forged_events_appended_at_the_end(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric)
    forged = append_forged(_sql(data / "events.sqlite"), EVENTS, "rowid", head // 2)
    assert forged == head + 1
    code, report = _verify(data, fabric)
    assert code == 0, report
    assert (report["chained"], report["unchained"], report["head_position"]) == (head, 1, head)
    read_store = _sql(data / "readmodels.sqlite")
    assert read_store(f"SELECT MAX(notification_id) FROM {CHAIN}") == [(head,)]
    assert read_store("SELECT notification_id FROM follower_positions WHERE follower = 'audit_chain'") == [(head,)]
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        assert client.audit_verify().unchained == 1
    assert read_store(f"SELECT MAX(notification_id) FROM {CHAIN}") == [(head,)]


def test_finding_10_the_chain_follower_does_not_extend_a_truncated_chain(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric)
    _sql(data / "readmodels.sqlite")(f"DELETE FROM {CHAIN} WHERE notification_id > ?", (head // 2,))
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        client.create_vault("vault-later", "japaneast", "rg")
        follower = ChainFollower(client._runtime.app, client._runtime.store)
        assert follower.run_once() == 0 and follower.halted
        report = client.audit_verify(chain_only=True)
    assert [(f.kind, f.notification_id) for f in report.findings] == [("chain_truncated", head // 2 + 1)]
    assert report.unchained == report.checked - head > 0


# Finding 11: a stored row that does not read back is a named finding, never a traceback.


def _target(sql: Any, head: int, column: str) -> int:
    """The event to malform: one of the middle (an audit checkpoint, for `checkpoint`)."""
    if column != "checkpoint":
        return head // 2
    [(first,)] = sql(f"SELECT MIN(rowid) FROM {EVENTS} WHERE topic = ?", ("backup.audit_checkpoint.created",))
    return int(first)


@pytest.mark.parametrize("malformation", [*MALFORMED_SQLITE, "checkpoint_state_not_json"])
def test_finding_11_each_malformed_row_is_a_named_finding(
    tmp_path: Path, fabric: Path, malformation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections.chain, "CHECKPOINT_EVERY", 20)
    data = tmp_path / "data"
    head = _history(data, fabric)
    sql = _sql(data / "events.sqlite")
    assignment, column = MALFORMED_SQLITE.get(malformation, ("state = CAST('not json' AS BLOB)", "checkpoint"))
    target = _target(sql, head, column)
    sql(f"UPDATE {EVENTS} SET {assignment} WHERE rowid = ?", (target,))
    code, report = _verify(data, fabric)
    assert code == 1
    malformed = [f for f in report["findings"] if f["kind"] == "malformed"]
    assert [f["notification_id"] for f in malformed] == [target]
    assert ("state" if column == "checkpoint" else column) in malformed[0]["detail"]
    # Nothing else is accused (a changed event changes the chain the later checkpoints recorded).
    assert {f["notification_id"] for f in report["findings"] if f["kind"] != "checkpoint_mismatch"} == {target}
    assert report["read_models"] == 0 and "malformed" in report["read_models_skipped"]
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        assert [f.notification_id for f in client.audit_verify().findings if f.kind == "malformed"] == [target]


def test_finding_11_state_that_does_not_decrypt_is_malformed(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric, event_cipher_key=KEY)
    sql = _sql(data / "events.sqlite")
    target = head // 2
    [(state,)] = sql(f"SELECT state FROM {EVENTS} WHERE rowid = ?", (target,))
    damaged = bytes(state)[:-1] + bytes([bytes(state)[-1] ^ 1])
    sql(f"UPDATE {EVENTS} SET state = ? WHERE rowid = ?", (damaged, target))
    code, report = _verify(data, fabric, BACKUP_EVENT_CIPHER_KEY=KEY)
    assert code == 1
    assert ("malformed", target) in _kinds(report)
    [finding] = [f for f in report["findings"] if f["kind"] == "malformed"]
    assert "state" in finding["detail"] and "decode" in finding["detail"]


@pytest.mark.parametrize(
    "assignment",
    ["state = NULL", "state = CAST('not json' AS BLOB)", "originator_version = NULL", "originator_id = 'not-a-uuid'"],
)
def test_finding_11_the_snapshot_check_survives_malformed_events(tmp_path: Path, fabric: Path, assignment: str) -> None:
    """An aggregate with a snapshot, one of whose events is malformed: named, and no crash."""
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric, principal="alice") as client:
        vault = client.create_vault("vault-snap", "japaneast", "rg")
        for i in range(SNAPSHOT_INTERVAL):
            client.set_replication(vault, "local" if i % 2 == 0 else "geo")
        assert client.audit_verify().snapshots == 1
    sql = _sql(data / "events.sqlite")
    [(target,)] = sql(
        f"SELECT rowid FROM {EVENTS} WHERE originator_id = ? AND originator_version = 3", (vault.replace("-", ""),)
    )
    sql(f"UPDATE {EVENTS} SET {assignment} WHERE rowid = ?", (target,))
    code, report = _verify(data, fabric)
    assert code == 1 and ("malformed", target) in _kinds(report)


# Finding 12: the read models changed in the database.


def test_finding_12_a_changed_read_model_is_a_read_model_mismatch(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    _history(data, fabric)
    read_store = _sql(data / "readmodels.sqlite")
    [(point,)] = read_store("SELECT recovery_point_id FROM rm_recovery_points ORDER BY recovery_point_id LIMIT 1")
    [(job,)] = read_store("SELECT job_id FROM rm_jobs ORDER BY job_id LIMIT 1")
    read_store("DELETE FROM rm_recovery_points WHERE recovery_point_id = ?", (point,))
    read_store("UPDATE rm_jobs SET status = 'failed' WHERE job_id = ?", (job,))
    code, report = _verify(data, fabric)
    assert code == 1
    found = {f["table"]: f["detail"] for f in report["findings"]}
    assert _kinds(report) == [("read_model_mismatch", 0)] * 2 and set(found) == {"rm_jobs", "rm_recovery_points"}
    assert point in found["rm_recovery_points"] and job in found["rm_jobs"]
    assert report["read_models"] == READ_MODELS
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        assert {f.table for f in client.audit_verify().findings} == {"rm_jobs", "rm_recovery_points"}


def test_finding_12_chain_only_skips_the_read_models(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    _history(data, fabric)
    _sql(data / "readmodels.sqlite")("DELETE FROM rm_recovery_points")
    code, report = _verify(data, fabric, "--chain-only")
    assert code == 0 and report["clean"] and report["read_models"] == 0
    with Client(data_dir=data, fabric=fabric, start_services=False) as client:
        assert client.audit_verify(chain_only=True).clean
        assert not client.audit_verify().clean


def test_finding_12_an_untouched_history_verifies_clean_with_its_read_models(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    head = _history(data, fabric)
    code, report = _verify(data, fabric)
    assert code == 0 and report["clean"] and report["read_models"] == READ_MODELS and report["checked"] == head
    settings = {"BACKUP_DATA_DIR": str(data), "BACKUP_FABRIC": str(fabric), "COLUMNS": "250"}
    table = CliRunner().invoke(app, ["audit", "verify"], env=settings)
    assert table.exit_code == 0 and f"{READ_MODELS} read models compared" in table.output, table.output


@pytest.mark.parametrize("malformation", ["originator_id_not_a_uuid", "state_null", "state_not_json"])
def test_finding_11_a_malformed_first_event_does_not_stop_the_store_from_opening(
    tmp_path: Path, fabric: Path, malformation: str
) -> None:
    """The start-up check of the event cipher reads the first rows as stored: a malformed first event
    is `audit verify`'s to name, not an EventCipherMismatch or a traceback at start."""
    data = tmp_path / "data"
    _history(data, fabric)
    change, column = MALFORMED_SQLITE[malformation]
    with sqlite3.connect(data / "events.sqlite") as con:
        con.execute(f"UPDATE {EVENTS} SET {change} WHERE rowid = 1")
    with Client(data_dir=data, fabric=fabric, principal="alice", start_services=False) as client:
        report = client.audit_verify(chain_only=True)
    assert {(f.kind, f.notification_id) for f in report.findings} == {("malformed", 1), ("modified", 1)}
    assert column in next(f.detail for f in report.findings if f.kind == "malformed")
