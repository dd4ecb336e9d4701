"""Retention: expiry as events, the newest point of a protected VM held, unused blocks collected."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.clock import ManualClock
from tests.helpers import topics

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path, fabric: Path) -> Iterator[tuple[Client, ManualClock, str]]:
    clock = ManualClock(START)
    with Client(data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        client.wait_all(client.protect(vault, ["vm01", "vm02"]))
        yield client, clock, vault


def _change_disk(client: Client, vm: str) -> None:
    [(_, path)] = client._runtime.fabric.disk_paths(f"default/rg-japaneast/{vm}")
    with path.open("r+b") as f:
        f.write(os.urandom(4096))


def _three_points(client: Client, clock: ManualClock, vault: str, vm: str = "vm01") -> None:
    for _ in range(3):
        client.wait(client.backup_now(vault, vm, retain_until=clock.now() + timedelta(days=1)))
        _change_disk(client, vm)
        clock.advance(timedelta(hours=1))


def test_expired_points_go_and_the_newest_is_held_with_its_reason(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    _three_points(client, clock, vault)
    clock.advance(timedelta(days=2))
    job = client.wait(client.run_retention(vault))
    assert job.status == "completed"
    assert (job.result["expired"], job.result["held"]) == (2, 1)
    assert job.result["blocks_removed"] == 2 and job.result["manifests_deleted"] == 2
    [kept] = client.recovery_points(vault, "vm01")
    assert kept.held_reason == "newest recovery point of an actively protected VM"
    expired = [r for r in client.recovery_points(vault, "vm01", include_expired=True) if r.expired]
    assert len(expired) == 2 and all("retention ended" in r.expiry_reason for r in expired)
    assert topics(client)["backup.recovery_point.expired"] == 2
    assert client.check_vault(vault)["clean"] and client.check_vault(vault)["orphans"] == []
    restored = client.wait(client.restore(kept.recovery_point_id, "vm01-back"))
    assert restored.status == "completed"


def test_a_point_not_yet_due_is_left_alone(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    _three_points(client, clock, vault)
    job = client.wait(client.run_retention(vault))
    assert (job.result["expired"], job.result["blocks_removed"]) == (0, 0)
    assert len(client.recovery_points(vault, "vm01")) == 3


def test_collection_is_skipped_while_a_backup_holds_the_vault(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    _three_points(client, clock, vault)
    clock.advance(timedelta(days=2))
    store = client._runtime.worker_context().vault_store(client.vaults()[0].vault_id)  # type: ignore[arg-type]
    with store.backup_lease():  # as a running backup does
        job = client.wait(client.run_retention(vault))
    assert job.result["skipped"] is True and job.result["blocks_removed"] == 0
    assert client.check_vault(vault)["clean"]
    later = client.wait(client.run_retention(vault))
    assert later.result["blocks_removed"] == 2


def test_editing_a_policy_reapplies_retention_as_events(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    clock.advance(timedelta(days=1))
    created = client.run_scheduler()  # DefaultPolicy: 22:30 daily
    client.wait_all(created)
    [rp] = client.recovery_points(vault, "vm01")
    assert rp.expires_at == rp.taken_at + timedelta(days=30)
    changed = client.update_policy(vault, "DefaultPolicy", {"frequency": "daily", "times": ["22:30"]},
                                   {"daily": {"days": 90}})
    assert changed == 2  # vm01's and vm02's points
    [rp] = client.recovery_points(vault, "vm01")
    assert rp.expires_at == rp.taken_at + timedelta(days=90)
    client.update_policy(vault, "DefaultPolicy", {"frequency": "daily", "times": ["22:30"]}, {"daily": {"days": 7}})
    [rp] = client.recovery_points(vault, "vm01")
    assert rp.expires_at == rp.taken_at + timedelta(days=7)
    assert topics(client)["backup.recovery_point.retention_changed"] == 4


def test_changing_a_vms_policy_is_its_own_command(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    client.create_policy(vault, "Keep90", {"frequency": "daily", "times": ["22:30"]}, {"daily": {"days": 90}})
    clock.advance(timedelta(days=1))
    client.wait_all(client.run_scheduler())
    assert client.change_policy(vault, "vm01", "Keep90") == 1
    items = {i.vm_name: i for i in client.protected_items(vault)}
    assert (items["vm01"].policy_name, items["vm02"].policy_name) == ("Keep90", "DefaultPolicy")
    counts = {p.name: p.item_count for p in client.policies(vault)}
    assert counts == {"DefaultPolicy": 1, "Keep90": 1}


def test_stopping_protection_keeps_or_deletes_the_data(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    client.wait(client.backup_now(vault, "vm01"))
    client.wait(client.backup_now(vault, "vm02"))
    keep = client.wait(client.stop_protection(vault, "vm01"))
    assert keep.status == "completed"
    drop = client.wait(client.stop_protection(vault, "vm02", delete_data=True))
    assert drop.result["recovery_points_expired"] == 1
    items = {i.vm_name: i.status for i in client.protected_items(vault)}
    assert items == {"vm01": "protection_stopped", "vm02": "registered"}
    assert len(client.recovery_points(vault, "vm01")) == 1 and client.recovery_points(vault, "vm02") == []
    clock.advance(timedelta(days=31))
    result = client.wait(client.run_retention(vault)).result
    assert result["expired"] == 1  # vm01's point: no longer held, its VM is not actively protected
    assert client.check_vault(vault)["clean"]
