"""Retention: expiry as events, the newest point of a protected VM held, unused blocks collected."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from orchestrator import Client
from orchestrator.clock import ManualClock
from orchestrator.domain import Job, RecoveryPoint, VirtualMachine
from orchestrator.domain.item import item_id_for
from orchestrator.domain.recovery_point import DiskInfo, recovery_point_id_for
from orchestrator.write import commands as c
from tests.helpers import CLOCK_START, topics
from workers import work as jobs
from workers.collection import BackupLease

START = CLOCK_START


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


def test_editing_a_policy_reapplies_retention_as_events(world: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = world
    clock.advance(timedelta(days=1))
    created = client.run_scheduler()  # DefaultPolicy: 22:30 daily
    client.wait_all(created)
    [rp] = client.recovery_points(vault, "vm01")
    assert rp.expires_at == rp.taken_at + timedelta(days=30)
    changed = client.update_policy(
        vault, "DefaultPolicy", {"frequency": "daily", "times": ["22:30"]}, {"daily": {"days": 90}}
    )
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
    client.set_soft_delete(vault, "disabled")  # deleted data goes at once (soft delete: test_deletion_protection)
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


def _scheduled_points(client: Client, clock: ManualClock, days: int) -> None:
    """A scheduled backup of each protected VM a day (DefaultPolicy: 22:30 daily, kept 30 days)."""
    for _ in range(days):
        clock.advance(timedelta(days=1))
        client.wait_all(client.run_scheduler())
        for vm in ("vm01", "vm02"):
            _change_disk(client, vm)


def _ended(client: Client, job_id: str, timeout: float = 60) -> Job:
    """The job as the event store has it, once ended (for when the read models are held back)."""
    deadline = time.monotonic() + timeout
    while not (job := client._runtime.app.get(UUID(job_id), Job)).state.is_terminal:
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        time.sleep(0.05)
    return job


def _expired_points(client: Client) -> int:
    """How many of vm01's and vm02's points the event store has expired."""
    app = client._runtime.app
    items = [app.get(item_id_for(f"default/rg-japaneast/{vm}"), VirtualMachine) for vm in ("vm01", "vm02")]
    return sum(app.get(rp_id, RecoveryPoint).expired for item in items for rp_id in item.recovery_point_ids)


def test_finding_20a_a_policy_edit_is_acted_on_by_the_next_retention_while_the_read_model_lags(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    _scheduled_points(client, clock, 3)
    clock.advance(timedelta(days=10))  # 11-13 days old: kept 30 days, due once kept 7
    runtime = client._runtime
    [projections] = [t for t in runtime.threads if t.name == "projections"]
    projections.stop()  # the read models stay where they are: before the edit
    runtime.threads.remove(projections)
    try:
        client.update_policy(vault, "DefaultPolicy", {"frequency": "daily", "times": ["22:30"]}, {"daily": {"days": 7}})
        job = _ended(client, client.run_retention(vault))
    finally:
        resumed = runtime.projections_thread()
        resumed.start()
        runtime.threads.append(resumed)
    assert job.state.value == "completed"
    assert (job.result["expired"], job.result["held"], job.result["manifests_deleted"]) == (4, 2, 4)
    assert _expired_points(client) == 4
    assert len(client.recovery_points(vault)) == 2 and client.check_vault(vault)["clean"]


def test_finding_12_retention_finds_due_points_in_the_event_store_when_the_read_model_lost_them(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    _three_points(client, clock, vault)
    clock.advance(timedelta(days=2))
    store = client._runtime.store
    with store.transaction() as tx:
        tx.execute(f"DELETE FROM {store.t('recovery_points')}")
    job = client.wait(client.run_retention(vault))
    assert (job.result["expired"], job.result["held"], job.result["manifests_deleted"]) == (2, 1, 2)
    assert job.result["blocks_removed"] == 2
    assert _expired_points(client) == 2
    assert client.check_vault(vault)["clean"]


def test_finding_12_a_manifest_whose_point_is_recorded_while_retention_looks_is_kept(
    world: tuple[Client, ManualClock, str],
) -> None:
    # A backup has committed its manifest and is about to report it; retention looks the point up
    # (not there yet), the report lands, then retention looks at the job (ended): the point it
    # just made must not lose its manifest.
    client, _, vault = world
    runtime = client._runtime
    runtime.close_workers()  # this test plays the worker
    job_id = UUID(client.backup_now(vault, "vm01"))
    ctx = runtime.worker_context()
    ctx.report(c.StartJob(job_id=job_id, worker="test"))
    job = runtime.app.get(job_id, Job)
    vm = ctx.fabric.get_vm(job.vm_key)
    store = ctx.vault_store(job.vault_id)
    rp_id = str(recovery_point_id_for(job_id))
    with BackupLease(ctx, job, store):
        manifest, digest, _ = jobs._snapshot(ctx, job, vm, store, rp_id)
    taken = c.RecordBackupTaken(
        job_id=job_id,
        taken_at=manifest.taken_at,
        consistency=manifest.consistency,
        logical_bytes=manifest.logical_bytes,
        stored_bytes=manifest.stored_bytes,
        manifest_digest=digest,
        disks=[DiskInfo(name=d.name, size=d.size, digest=d.digest) for d in manifest.disks],
    )

    class ReportLandsAfterTheFirstLook:
        def __init__(self) -> None:
            self.reported = False

        def find(self, aggregate_id: UUID, cls: type[Any]) -> Any:
            found = runtime.app.find(aggregate_id, cls)
            if cls is RecoveryPoint and not self.reported:
                self.reported = True
                ctx.report(taken)
            return found

    racing = dataclasses.replace(ctx, app=ReportLandsAfterTheFirstLook())
    assert jobs._dead(racing, store, rp_id) is False
    assert store.manifest_path(rp_id).exists() and runtime.app.get(job_id, Job).state.value == "completed"


def test_finding_15_a_bad_manifest_stops_neither_expiry_nor_collection_elsewhere(
    world: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = world
    _three_points(client, clock, vault)
    clock.advance(timedelta(days=2))
    manifests = client.settings.vault_store_path / vault / "manifests"
    # Named by recovery points that do not exist: JSON but no manifest (it names a block of its
    # own), and a file cut short.
    invalid, cut = manifests / f"{uuid4()}.json", manifests / f"{uuid4()}.json"
    cipher = client._runtime.worker_context().vault_store(UUID(vault)).keys.cipher(create=True)
    assert cipher is not None  # sealed as a writer holding the vault's key would, with bad content
    invalid.write_bytes(cipher.seal_manifest(invalid.stem, f'{{"disks": [{{"blocks": ["{"f" * 64}"]}}]}}'.encode()))
    cut.write_bytes(cipher.seal_manifest(cut.stem, b'{"recovery_point_id": '))
    job = client.wait(client.run_retention(vault))
    assert job.status == "completed", job.error_message
    assert (job.result["expired"], job.result["held"], job.result["manifests_deleted"]) == (2, 1, 2)
    assert job.result["skipped"] is True and job.result["blocks_removed"] == 0  # held back, and why
    assert cut.name in job.result["reason"] and "is not JSON" in job.result["reason"]
    report = client.check_vault(vault)
    assert not report["clean"]
    assert {b["file"] for b in report["bad_manifests"]} == {f"manifests/{invalid.name}", f"manifests/{cut.name}"}
    cut.unlink()  # repaired: collection goes on
    later = client.wait(client.run_retention(vault))
    assert later.result["skipped"] is False and later.result["blocks_removed"] == 2
    [kept] = client.recovery_points(vault, "vm01")
    assert client.wait(client.restore(kept.recovery_point_id, "vm01-back")).status == "completed"
