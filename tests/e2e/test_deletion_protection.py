"""Deletion protection: soft delete (kept for a window, undelete, purge) and immutable vaults."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.clock import ManualClock
from tests.helpers import CLOCK_START, event_count

START = CLOCK_START
DAILY = {"frequency": "daily", "times": ["22:30"]}


def refused(call: Callable[[], Any]) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        call()
    return caught.value


def refused_storing_nothing(client: Client, call: Callable[[], Any]) -> OrchestratorError:
    before = event_count(client)
    error = refused(call)
    assert event_count(client) == before, error.code
    return error


def _disk(client: Client, vm: str) -> Path:
    [(_, path)] = client._runtime.fabric.disk_paths(f"default/rg-japaneast/{vm}")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _item(client: Client, vault: str, vm: str) -> Any:
    return next(i for i in client.protected_items(vault) if i.vm_name == vm)


def test_soft_deleted_data_is_kept_undeleted_and_restored_byte_for_byte(
    world: tuple[Client, ManualClock, str], tmp_path: Path
) -> None:
    client, clock, vault = world
    client.wait(client.backup_now(vault, "vm01"))
    backed_up = _sha(_disk(client, "vm01"))
    with _disk(client, "vm01").open("r+b") as disk:  # the VM moves on after its backup
        disk.write(os.urandom(4096))
    [point] = client.recovery_points(vault, "vm01")

    stopped = client.wait(client.stop_protection(vault, "vm01", delete_data=True))
    purge_at = START + timedelta(days=14)
    assert stopped.result == {
        "delete_data": True,
        "recovery_points_expired": 0,
        "soft_deleted": True,
        "purge_at": purge_at.isoformat(),
    }
    item = _item(client, vault, "vm01")
    assert (item.status, item.purge_at) == ("soft_deleted", purge_at)
    assert [p.recovery_point_id for p in client.recovery_points(vault, "vm01")] == [point.recovery_point_id]
    target = tmp_path / "restored"
    target.mkdir()
    error = refused_storing_nothing(
        client, lambda: client.restore(point.recovery_point_id, "copy", "disks", str(target))
    )
    assert (error.code, error.field) == ("VmSoftDeleted", "recovery_point_id")
    assert refused_storing_nothing(client, lambda: client.backup_now(vault, "vm01")).code == "VmNotProtected"
    error = refused_storing_nothing(client, lambda: client.stop_protection(vault, "vm01", delete_data=True))
    assert error.code == "VmSoftDeleted"

    clock.advance(timedelta(days=13))  # retention runs in the window: only the purge deletes the data
    kept = client.wait(client.run_retention(vault)).result
    assert (kept["expired"], kept["purged"], kept["manifests_deleted"]) == (0, 0, 0)
    assert client.wait(client.undelete(vault, "vm01")).status == "completed"
    item = _item(client, vault, "vm01")
    assert (item.status, item.purge_at) == ("protection_stopped", None)
    assert refused_storing_nothing(client, lambda: client.undelete(vault, "vm01")).code == "VmNotSoftDeleted"

    restore = client.wait(client.restore(point.recovery_point_id, "copy", "disks", str(target)))
    assert restore.status == "completed"
    [restored] = [p for p in (target / "copy").iterdir() if p.is_file()]
    assert _sha(restored) == backed_up

    assert {j.status for j in client.wait_all(client.protect(vault, ["vm01"]))} == {"completed"}  # resumed
    client.wait(client.backup_now(vault, "vm01"))
    assert len(client.recovery_points(vault, "vm01")) == 2 and _item(client, vault, "vm01").status == "protected"


def test_the_purge_deletes_soft_deleted_data_after_the_window_in_force_at_deletion(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    client.wait_all([client.backup_now(vault, vm, retain_until=START + timedelta(days=365)) for vm in ("vm01", "vm02")])
    stored = client.dashboard(vault).vaults[0].storage_stored_bytes
    client.set_soft_delete(vault, "enabled", 30)
    client.wait(client.stop_protection(vault, "vm01", delete_data=True))  # kept 30 days
    client.set_soft_delete(vault, "enabled", 14)  # later deletions: 14 days; vm01 keeps its 30
    client.wait(client.stop_protection(vault, "vm02", delete_data=True))
    assert [v.soft_delete_days for v in client.vaults()] == [14]

    clock.advance(timedelta(days=20))
    first = client.wait(client.run_retention(vault)).result
    assert (first["purged"], first["manifests_deleted"]) == (1, 1)
    items = {i.vm_name: i.status for i in client.protected_items(vault)}
    assert items == {"vm01": "soft_deleted", "vm02": "registered"}
    assert client.recovery_points(vault, "vm02") == []
    [gone] = client.recovery_points(vault, "vm02", include_expired=True)
    assert gone.expired and "soft-delete window ended" in gone.expiry_reason
    assert refused_storing_nothing(client, lambda: client.undelete(vault, "vm02")).code == "VmNotSoftDeleted"

    clock.advance(timedelta(days=11))
    assert refused_storing_nothing(client, lambda: client.undelete(vault, "vm01")).code == "SoftDeleteWindowEnded"
    second = client.wait(client.run_retention(vault)).result
    assert second["purged"] == 1 and second["blocks_removed"] >= 1
    assert {i.status for i in client.protected_items(vault)} == {"registered"}
    assert client.dashboard(vault).vaults[0].storage_stored_bytes < stored
    assert client.recovery_points(vault) == []


def test_soft_delete_disabled_deletes_at_once_and_always_on_stays(world: tuple[Client, ManualClock, str]) -> None:
    client, _, vault = world
    assert [(v.soft_delete, v.soft_delete_days) for v in client.vaults()] == [("enabled", 14)]
    for days in (13, 181):
        error = refused_storing_nothing(client, lambda d=days: client.set_soft_delete(vault, "enabled", d))
        assert (error.code, error.field) == ("SoftDeleteRetentionInvalid", "retention_days")
    error = refused_storing_nothing(client, lambda: client.set_soft_delete(vault, "sometimes"))
    assert error.field == "state"

    client.wait(client.backup_now(vault, "vm01"))
    client.set_soft_delete(vault, "disabled")
    stopped = client.wait(client.stop_protection(vault, "vm01", delete_data=True))
    assert stopped.result == {"delete_data": True, "recovery_points_expired": 1}
    assert _item(client, vault, "vm01").status == "registered"

    client.set_soft_delete(vault, "always_on", 60)
    client.set_soft_delete(vault, "always_on", 90)  # its window may still change
    for state in ("enabled", "disabled"):
        error = refused_storing_nothing(client, lambda s=state: client.set_soft_delete(vault, s))
        assert (error.code, error.field) == ("SoftDeleteAlwaysOn", "state")
    assert [(v.soft_delete, v.soft_delete_days) for v in client.vaults()] == [("always_on", 90)]


def test_an_immutable_vault_refuses_deleting_and_shortening_and_allows_lengthening(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    client.create_policy(vault, "Keep60", DAILY, {"daily": {"days": 60}})
    client.create_policy(vault, "Keep7", DAILY, {"daily": {"days": 7}})
    client.create_policy(
        vault, "Tiered", DAILY, {"daily": {"days": 30}, "weekly": {"weekdays": ["sunday"], "weeks": 12}}
    )
    clock.advance(timedelta(days=1))
    client.wait_all(client.run_scheduler())  # a scheduled point each, kept 30 days
    error = refused_storing_nothing(client, lambda: client.set_immutability(vault, "locked"))
    assert (error.code, error.field) == ("ImmutabilityNotEnabled", "state")
    client.set_immutability(vault, "enabled")
    assert [v.immutability for v in client.vaults()] == ["enabled"]

    refusals: list[Callable[[], Any]] = [
        lambda: client.stop_protection(vault, "vm01", delete_data=True),
        lambda: client.update_policy(vault, "DefaultPolicy", DAILY, {"daily": {"days": 29}}),
        lambda: client.update_policy(vault, "Tiered", DAILY, {"daily": {"days": 30}}),  # a tier dropped, no VM
        lambda: client.change_policy(vault, "vm01", "Keep7"),
    ]
    for call in refusals:
        error = refused_storing_nothing(client, call)
        assert error.code == "VaultImmutable" and "immutable (enabled)" in error.message, error.message
    [before] = client.recovery_points(vault, "vm01")

    assert (
        client.update_policy(
            vault, "DefaultPolicy", {"frequency": "daily", "times": ["03:00"]}, {"daily": {"days": 45}}
        )
        == 2
    )
    [longer] = client.recovery_points(vault, "vm01")
    assert longer.expires_at == before.taken_at + timedelta(days=45)
    assert client.change_policy(vault, "vm01", "Keep60") == 1
    assert client.wait(client.stop_protection(vault, "vm02")).status == "completed"  # data kept: allowed

    client.set_immutability(vault, "disabled")  # enabled is reversible
    assert client.change_policy(vault, "vm01", "Keep7") == 1
    client.set_immutability(vault, "enabled")
    client.set_immutability(vault, "locked")
    for state in ("enabled", "disabled"):
        error = refused_storing_nothing(client, lambda s=state: client.set_immutability(vault, s))
        assert (error.code, error.field) == ("ImmutabilityLocked", "state")
    error = refused_storing_nothing(client, lambda: client.stop_protection(vault, "vm01", delete_data=True))
    assert error.code == "VaultImmutable" and "locked" in error.message


def test_an_immutable_vault_purges_soft_deleted_points_no_earlier_than_their_expiry(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    client.wait(client.backup_now(vault, "vm01", retain_until=START + timedelta(days=40)))
    client.wait(client.stop_protection(vault, "vm01", delete_data=True))
    client.set_immutability(vault, "enabled")
    clock.advance(timedelta(days=20))  # the window ended, the point's own expiry not yet
    assert client.wait(client.run_retention(vault)).result["purged"] == 0
    assert _item(client, vault, "vm01").status == "soft_deleted"
    assert len(client.recovery_points(vault, "vm01")) == 1
    clock.advance(timedelta(days=21))
    assert client.wait(client.run_retention(vault)).result["purged"] == 1
    assert _item(client, vault, "vm01").status == "registered"


def test_the_cli_sets_deletion_protection_and_undeletes(tmp_path: Path, fabric: Path) -> None:
    from orchestrator.entry.cli.main import app

    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01"]))
        client.wait_all(client.protect(vault, ["vm01"]))
        client.wait(client.backup_now(vault, "vm01"))
    env = {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}
    runner = CliRunner()
    for args in (
        ["vault", "set-soft-delete", "vault-east", "enabled", "--retention-days", "21"],
        ["stop-protection", "vm01", "--vault", "vault-east", "--delete-data"],
        ["undelete", "vm01", "--vault", "vault-east"],
        ["vault", "set-immutability", "vault-east", "enabled"],
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    result = runner.invoke(app, ["vault", "set-soft-delete", "vault-east", "enabled", "--retention-days", "7"], env=env)
    assert result.exit_code != 0 and "SoftDeleteRetentionInvalid" in result.output
    listed = runner.invoke(app, ["vault", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["soft_delete"], row["soft_delete_days"], row["immutability"]) == ("enabled", 21, "enabled")
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        assert _item(client, vault, "vm01").status == "protection_stopped"


def test_an_immutable_vault_refuses_an_edit_that_would_expire_an_existing_point_earlier(
    world: tuple[Client, ManualClock, str],
) -> None:
    """Moving the monthly tier to another day keeps as many months, but the point taken on the 2nd
    loses its monthly tier: the points are checked one by one."""
    client, clock, vault = world
    on_second = {"daily": {"days": 30}, "monthly": {"on": {"days": [2]}, "months": 12}}
    client.update_policy(vault, "DefaultPolicy", DAILY, on_second)
    clock.advance(timedelta(days=1))
    client.wait_all(client.run_scheduler())  # taken on November 2nd: kept 12 months
    assert {p.tiers[-1] for p in client.recovery_points(vault)} == {"monthly"}
    client.set_immutability(vault, "enabled")
    on_last = {"daily": {"days": 30}, "monthly": {"on": {"days": ["last"]}, "months": 12}}
    error = refused_storing_nothing(client, lambda: client.update_policy(vault, "DefaultPolicy", DAILY, on_last))
    assert error.code == "VaultImmutable" and "would expire earlier" in error.message
    longer = {"daily": {"days": 30}, "monthly": {"on": {"days": [2, "last"]}, "months": 24}}
    assert client.update_policy(vault, "DefaultPolicy", DAILY, longer) == 2


def test_only_an_empty_vault_is_deleted_and_its_name_is_not_made_again(world: tuple[Client, ManualClock, str]) -> None:
    client, _, vault = world
    client.wait(client.backup_now(vault, "vm01"))
    error = refused_storing_nothing(client, lambda: client.delete_vault(vault))
    assert (error.code, error.field) == ("VaultNotEmpty", "vault_id") and "vm01 (protected" in error.message
    client.wait(client.stop_protection(vault, "vm01", delete_data=True))  # soft deleted: still held
    error = refused_storing_nothing(client, lambda: client.delete_vault(vault))
    assert "vm01 (soft_deleted)" in error.message
    client.wait(client.undelete(vault, "vm01"))
    client.set_soft_delete(vault, "disabled")
    for vm in ("vm01", "vm02"):
        client.wait(client.stop_protection(vault, vm, delete_data=True))
        client.wait(client.unregister(vault, vm))
    client.delete_vault(vault)
    assert client.vaults() == []
    assert refused_storing_nothing(client, lambda: client.discover(vault)).code == "VaultNotFound"
    error = refused_storing_nothing(client, lambda: client.create_vault("vault-east", "japaneast", "rg"))
    assert error.code == "VaultNameTaken" and "deleted" in error.message
    other = client.create_vault("vault-west", "japaneast", "rg")
    client.wait(client.discover(other))
    assert {j.status for j in client.wait_all(client.register(other, ["vm01"]))} == {"completed"}
    assert [e.event_type for e in client.history(vault_id=vault, event_type="vault.deleted")] == [
        "backup.vault.deleted"
    ]
