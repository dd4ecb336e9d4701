"""projections/stored_rows.py reads the event library's table with SQL of its own: these fail loudly
when the library's layout changes (its columns, or what a row read as stored holds)."""

from __future__ import annotations

from pathlib import Path

from orchestrator import Client
from orchestrator.audit import replay
from projections.stored_rows import EXPECTED, identity, read_rows
from tests.helpers import fabric_with


def test_the_events_table_has_the_columns_read_as_stored(tmp_path: Path) -> None:
    with Client(
        data_dir=tmp_path / "data", fabric=fabric_with(tmp_path, healthy=1), principal="alice", start_services=False
    ) as client:
        client.create_vault("vault-east", "japaneast", "rg")
        recorder = client._runtime.app.recorder
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"PRAGMA table_info({recorder.events_table_name})")
            columns = {row["name"]: row["type"].lower() for row in cursor.fetchall()}
    assert columns == {"originator_id": "text", "originator_version": "integer", "topic": "text", "state": "blob"}
    assert set(columns) == set(EXPECTED)


def test_rows_read_as_stored_are_what_the_library_reads(tmp_path: Path) -> None:
    with Client(
        data_dir=tmp_path / "data", fabric=fabric_with(tmp_path, healthy=1), principal="alice", start_services=False
    ) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.set_replication(vault, "local")
        app = client._runtime.app
        head = app.recorder.max_notification_id() or 0
        stored = read_rows(app, 1, head, head)
        notifications = [n for section in replay.sections(app, head) for n in section]
    assert len(stored) == len(notifications) >= 2
    for row, n in zip(stored, notifications, strict=True):
        assert row.notification_id == n.id
        assert identity(row) == (str(n.originator_id), n.originator_version, n.topic)
        assert row.state == ("blob", n.state)
