"""Costs that grow with the work (issue 17, part 7): `history()` finds its entries through the audit
index, reads only those from the event store (and the events the index has not reached), gives
exactly what a scan of the whole history gives, and `audit verify` names an index changed outside
its follower; `jobs` pages."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client
from orchestrator.audit.history import scan
from projections.runner import NAMES


def _history(client: Client) -> str:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    vms = [f"vm{i:02d}" for i in range(1, 11)]
    client.wait_all(client.register(vault, vms))
    client.wait_all(client.protect(vault, vms[:4]))
    client.wait_all([client.backup_now(vault, vm) for vm in vms[:4]])
    client.set_soft_delete(vault, "disabled")
    client.wait(client.stop_protection(vault, "vm02", delete_data=True))
    client.wait(client.unregister(vault, "vm09"))
    other = client.create_vault("vault-west", "japaneast", "rg")
    client.wait(client.discover(other))
    client.wait_all(client.register(other, ["vm09"]))  # the VM moves: its later events are of the other vault
    return vault


def _caught_up(client: Client) -> None:
    """Every follower of the client at the log's head: idle, none reads the log while a test counts."""
    head = client._runtime.app.recorder.max_notification_id() or 0
    assert client._runtime.store.wait([*NAMES, "audit_index", "audit_chain"], head, 30)


FILTERS: list[dict[str, Any]] = [
    {},
    {"vm_name": "vm01"},
    {"vm_name": "VM09"},
    {"vm_name": "rg-japaneast/vm03"},
    {"event_type": "job"},
    {"event_type": "job.completed"},
    {"event_type": "backup.vm"},
    {"event_type": "vault"},
]


def test_history_through_the_index_is_the_scan_of_the_whole_history(client: Client) -> None:
    vault = _history(client)
    _caught_up(client)
    app = client._runtime.app
    job = client.jobs(operation="backup", vault_id=vault)[0]
    middle = client.history()[len(client.history()) // 2].time
    cases = [
        *FILTERS,
        {"vault_id": vault},
        {"vault_id": vault, "vm_name": "vm09"},
        {"entity_id": job.job_id},
        {"start": middle},
        {"end": middle, "event_type": "vm"},
        {"start": middle, "end": middle + timedelta(seconds=1)},
        {"start": datetime.now(UTC) + timedelta(days=1)},
    ]
    for filters in cases:
        expected = list(scan(app, **filters))
        assert client.history(**filters) == expected, filters
    assert {e.vault_id for e in client.history(vm_name="vm09") if e.entity_type == "vm"} == {
        vault,
        client.vaults()[1].vault_id,
    }


def test_history_reads_what_it_finds_not_the_whole_history(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(client)
    for n in range(200):  # a longer history around vm07's events
        client.create_vault(f"filler-{n}", "japaneast", "rg")
    _caught_up(client)
    app = client._runtime.app
    total = app.recorder.max_notification_id() or 0
    read: list[int] = []
    select = app.recorder.select_notifications

    def counting(*args: Any, **kwargs: Any) -> Any:
        found = select(*args, **kwargs)
        read.append(len(found))
        return found

    monkeypatch.setattr(app.recorder, "select_notifications", counting)
    found = client.history(vm_name="vm07")
    assert found and total > 500
    assert sum(read) < len(found) + 2 * 64  # the matches, and at most the gaps of its ranges


def test_events_the_index_has_not_reached_are_read_from_the_store(tmp_path: Path, fabric: Path) -> None:
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = _history(client)
        _caught_up(client)
    with Client(data_dir=tmp_path / "data", fabric=fabric, start_services=False) as offline:
        offline.create_vault("vault-late", "japaneast", "rg")
        offline.create_policy(vault, "Late", {"frequency": "daily", "times": ["01:00"]}, {"daily": {"days": 9}})
        app = offline._runtime.app
        assert offline._runtime.store.position("audit_index") < (app.recorder.max_notification_id() or 0)
        for filters in [*FILTERS, {"vault_id": vault}, {"event_type": "policy"}]:
            assert offline.history(**filters) == list(scan(app, **filters)), filters
        assert [e.event_type for e in offline.history(event_type="policy.created")][-1] == "backup.policy.created"


def test_audit_verify_names_an_index_changed_outside_its_follower(tmp_path: Path, fabric: Path) -> None:
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        _history(client)
        _caught_up(client)
    with Client(data_dir=tmp_path / "data", fabric=fabric, start_services=False) as offline:
        assert offline.audit_verify(chain_only=True).clean
    with sqlite3.connect(tmp_path / "data" / "readmodels.sqlite") as con:
        [(hidden,)] = con.execute("SELECT MIN(notification_id) FROM rm_audit_index WHERE vm_short = 'vm03'").fetchall()
        con.execute("DELETE FROM rm_audit_index WHERE notification_id = ?", (hidden,))
        con.execute("UPDATE rm_audit_index SET principal = 'nobody' WHERE notification_id = 7")
    with Client(data_dir=tmp_path / "data", fabric=fabric, start_services=False) as offline:
        report = offline.audit_verify(chain_only=True)
    [finding] = report.findings
    assert finding.kind == "index_mismatch" and finding.notification_id == min(hidden, 7)
    assert (
        "2 rows differ" in finding.detail and f"notification {hidden}: the event is not in the index" in finding.detail
    )


def test_jobs_page_in_the_client_and_the_cli(tmp_path: Path, fabric: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator import OrchestratorError
    from orchestrator.entry.cli.main import app

    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, [f"vm{i:02d}" for i in range(1, 6)]))
        every = client.jobs()
        assert len(every) == 6 and client.jobs(limit=2) == every[:2]
        with pytest.raises(OrchestratorError) as caught:
            client.jobs(limit=0)
        assert (caught.value.code, caught.value.field) == ("CommandInvalid", "limit")
    env = {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}
    runner = CliRunner()
    paged = runner.invoke(app, ["jobs", "--limit", "4", "--json"], env=env)
    assert paged.exit_code == 0 and len(json.loads(paged.stdout)) == 4, paged.output
    shown = runner.invoke(app, ["jobs", "--limit", "4"], env=env)
    assert "more match" in shown.output
    assert len(json.loads(runner.invoke(app, ["jobs", "--all", "--json"], env=env).stdout)) == 6
