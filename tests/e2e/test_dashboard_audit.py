"""The dashboard (live, per vault and overall), the audit log with its filters and export, and the
replay's comparison with live read models."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import Client
from orchestrator.entry.cli.main import app
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import edit_vm

R = "japaneast"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    big = vm_entry("big", R, disks=3)  # 32 + 2 x 1000 GB: a 2032 GB instance
    for disk in big["disks"][1:]:
        disk["size_gb"] = 1000
    vms = [
        vm_entry("small", R),
        vm_entry("mid", R, disks=2),
        big,
        vm_entry("flaky", R),
        vm_entry("idle", R),
        vm_entry("other", R),
    ]
    return write_fabric(tmp_path / "fabric", {"default": vms}, disk_mib=1)


@pytest.fixture
def client(tmp_path: Path, inventory: Path) -> Iterator[Client]:
    with Client(data_dir=tmp_path / "data", fabric=inventory, principal="alice", scheduler_interval=3600) as c:
        yield c


@pytest.fixture
def vaults(client: Client, inventory: Path) -> tuple[str, str]:
    east, spare = client.create_vault("vault-east", R, "rg"), client.create_vault("vault-spare", R, "rg")
    client.wait(client.discover(east))
    client.wait(client.discover(spare))
    client.wait_all(client.register(east, ["small", "mid", "big", "flaky", "idle"]))
    client.wait_all(client.register(spare, ["other"]))
    client.wait_all(client.protect(east, ["small", "mid", "big", "flaky", "idle"]))
    client.wait_all([client.backup_now(east, vm) for vm in ("small", "mid", "big", "flaky")])
    edit_vm(inventory, "flaky", agent={"ready": False})
    assert client.wait(client.backup_now(east, "flaky")).error_code == "VmAgentNotReady"
    return east, spare


def test_the_dashboard_per_vault_and_overall(client: Client, vaults: tuple[str, str]) -> None:
    east, spare = vaults
    board = client.dashboard()
    [east_view, spare_view] = board.vaults
    assert (east_view.vault_name, spare_view.vault_name) == ("vault-east", "vault-spare")
    assert east_view.protected_items == 5 and spare_view.protected_items == 0
    assert east_view.items_by_status == {"protected": 3, "protected_initial_backup_pending": 1, "protection_error": 1}
    assert spare_view.items_by_status == {"registered": 1}
    assert east_view.initial_backup_pending == 1
    assert east_view.jobs_last_24h["failed"] == 1 and east_view.jobs_in_progress == 0
    assert east_view.jobs_last_24h["completed"] >= 4 + 5 + 4
    assert {(a.code, a.vm_name) for a in east_view.alerts} == {("BackupFailed", "flaky"), ("PrecheckFailing", "flaky")}
    points = client.recovery_points(east)
    assert (
        east_view.storage_logical_bytes == sum(p.logical_bytes for p in points) == 7 * 1024 * 1024
    )  # 1 + 2 + 3 + 1 disks of 1 MiB
    assert east_view.storage_stored_bytes == sum(p.stored_bytes for p in points)
    assert east_view.protected_instances_by_size == {"< 50 GB": 2, "50-500 GB": 1, "2000-2500 GB": 1}
    assert board.overall.protected_items == 5 and board.overall.items_by_status["registered"] == 1
    assert board.overall.storage_logical_bytes == east_view.storage_logical_bytes
    assert [v.vault_name for v in client.dashboard(spare).vaults] == ["vault-spare"]

    later = client.dashboard(now=datetime.now(UTC) + timedelta(days=2))
    overdue = {a.vm_name for a in later.vaults[0].alerts if a.code == "BackupOverdue"}
    assert overdue == {"small", "mid", "big", "flaky", "idle"}
    assert later.vaults[0].jobs_last_24h == {}

    client.wait(client.backup_now(east, "idle"))  # live: the next read shows it
    assert client.dashboard().vaults[0].initial_backup_pending == 0

    [small] = client.recovery_points(east, "small")
    before = client.dashboard(east).vaults[0]
    client.set_soft_delete(east, "disabled")
    client.wait(client.stop_protection(east, "small", delete_data=True))
    client.wait(client.run_retention(east))
    after = client.dashboard(east).vaults[0]
    assert after.storage_logical_bytes == before.storage_logical_bytes - small.logical_bytes
    assert after.storage_stored_bytes == before.storage_stored_bytes - small.stored_bytes
    assert after.protected_items == 4


def test_the_dashboard_in_the_terminal(
    tmp_path: Path, client: Client, vaults: tuple[str, str], inventory: Path
) -> None:
    client.close()
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(inventory),
        "COLUMNS": "160",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
    }
    table = CliRunner().invoke(app, ["dashboard"], env=env)
    assert table.exit_code == 0, table.output
    for words in (
        "vault-east",
        "vault-spare",
        "(all vaults)",
        "protected VMs",
        "BackupFailed",
        "flaky",
        "2000-2500 GB: 1",
        "stored after deduplication",
    ):
        assert words in table.output
    data = json.loads(CliRunner().invoke(app, ["dashboard", "vault-east", "--json"], env=env).output)
    assert data["vaults"][0]["protected_items"] == 5
    watched = CliRunner().invoke(app, ["dashboard", "--watch", "--interval", "0.1", "--times", "3"], env=env)
    assert watched.exit_code == 0 and "vault-east" in watched.output
    assert CliRunner().invoke(app, ["dashboard", "--watch", "--json"], env=env).exit_code == 2


def test_history_filters_and_exports(tmp_path: Path, client: Client, vaults: tuple[str, str], inventory: Path) -> None:
    east, spare = vaults
    everything = client.history()
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    assert {e.principal for e in everything} == {"alice", "worker:alice"}
    flaky = client.history(vm_name="flaky")
    assert flaky and {e.vm_name for e in flaky} == {"flaky"}
    failed = client.history(event_type="job.failed")
    assert [e.data["error_code"] for e in failed] == ["VmAgentNotReady"]
    assert failed[0].vm_name == "flaky" and failed[0].vault_id == east
    job = client.history(entity_id=failed[0].entity_id)
    assert job[0].event_type == "backup.job.created" and job[-1].event_type == "backup.job.failed"
    assert {e.vault_id for e in client.history(vault_id=spare)} == {spare}
    assert all(e.event_type.startswith("backup.vm.") for e in client.history(event_type="vm"))
    middle = everything[len(everything) // 2].time
    assert [e.position for e in client.history(start=middle)] == [e.position for e in everything if e.time >= middle]
    assert [e.position for e in client.history(end=middle)] == [e.position for e in everything if e.time < middle]

    client.close()
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(inventory),
        "COLUMNS": "200",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
    }
    export = tmp_path / "audit.jsonl"
    result = CliRunner().invoke(app, ["audit", "log", "--vm", "flaky", "--jsonl", str(export)], env=env)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["position"] for line in lines] == [e.position for e in flaky]
    assert all(line["principal"] and line["time"] for line in lines)
    table = CliRunner().invoke(app, ["audit", "log", "--vault", "vault-east", "--type", "job.failed"], env=env)
    assert table.exit_code == 0 and "VmAgentNotReady" in table.output and "worker:alice" in table.output


def test_replay_lists_what_differs_from_the_live_read_models(
    tmp_path: Path, client: Client, vaults: tuple[str, str], inventory: Path
) -> None:
    report = client.audit_replay()
    assert report.equal and report.events > 0 and report.live == report.replayed
    client.close()
    with sqlite3.connect(tmp_path / "data" / "readmodels.sqlite") as con:
        con.execute("UPDATE rm_items SET status = 'protected' WHERE vm_name = 'flaky'")
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(inventory),
        "COLUMNS": "200",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
    }
    result = CliRunner().invoke(app, ["audit", "replay", "--json"], env=env)
    assert result.exit_code == 1, result.output
    data: dict[str, Any] = json.loads(result.output)
    assert not data["equal"]
    [difference] = data["differences"]
    assert difference["table"] == "items" and '"status":"protected"' in difference["live"]
    assert '"status":"protection_error"' in difference["replayed"]
    text = CliRunner().invoke(app, ["audit", "replay"], env=env)
    assert text.exit_code == 1 and "DIFFERENT" in text.output


def test_read_commands_answer_as_of_a_past_instant(
    tmp_path: Path, client: Client, vaults: tuple[str, str], inventory: Path
) -> None:
    east, _ = vaults
    before = datetime.now(UTC)
    client.wait(client.backup_now(east, "idle"))
    assert "idle" not in {p.vm_name for p in client.as_of(before).recovery_points(east)}
    client.close()
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(inventory),
        "COLUMNS": "200",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
    }
    stamp = before.replace(tzinfo=None).isoformat()
    for args in (["recovery-points", "vault-east", "--json"], ["items", "vault-east", "--json"], ["jobs", "--json"]):
        now = json.loads(CliRunner().invoke(app, args, env=env).output)
        then = json.loads(CliRunner().invoke(app, [*args, "--as-of", stamp], env=env).output)
        assert then != now and len(then) <= len(now), args
    old = json.loads(CliRunner().invoke(app, ["dashboard", "vault-east", "--json", "--as-of", stamp], env=env).output)
    assert old["vaults"][0]["initial_backup_pending"] == 1
