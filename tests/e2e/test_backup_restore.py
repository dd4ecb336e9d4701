"""Protect, back up, restore: the restored disks equal the source disks byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import event_count

MIB = 1024 * 1024


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def protected(client: Client, discovered_vault: str) -> str:
    vms = [f"vm{i:02d}" for i in range(1, 11)]
    client.wait_all(client.register(discovered_vault, vms))
    jobs = client.wait_all(client.protect(discovered_vault, vms))
    assert {(j.operation, j.status) for j in jobs} == {("configure_protection", "completed")}, [
        j.error_message for j in jobs
    ]
    return discovered_vault


def _disks(client: Client, vm: str) -> dict[str, Path]:
    key = next(
        i.vm_key for i in client.protected_items(client.vaults()[0].vault_id, include_former=True) if i.vm_name == vm
    )
    return dict(client._runtime.fabric.disk_paths(key))


def test_protected_vms_wait_for_their_initial_backup(client: Client, protected: str) -> None:
    items = client.protected_items(protected)
    assert {i.status for i in items} == {"protected_initial_backup_pending"}
    assert {i.policy_name for i in items} == {"DefaultPolicy"}


def test_ten_vms_back_up_and_one_restores_byte_for_byte(client: Client, protected: str, tmp_path: Path) -> None:
    jobs = client.wait_all([client.backup_now(protected, f"vm{i:02d}") for i in range(1, 11)])
    assert {j.status for j in jobs} == {"completed"}
    assert {j.result["consistency"] for j in jobs} == {"application"}
    source = {name: _sha(path) for name, path in _disks(client, "vm03").items()}

    [rp] = client.recovery_points(protected, "vm03")
    assert rp.tiers == ["on_demand"] and rp.logical_bytes == MIB
    restore = client.wait(client.restore(rp.recovery_point_id, "vm03-restored"))
    assert restore.status == "completed" and restore.result["verified"] is True
    restored = client._runtime.fabric.find_vm("default", "vm03-restored")
    assert restored is not None and restored.spec.region == "japaneast"
    assert {d.name: _sha(restored.disk_path(d)) for d in restored.spec.disks} == {
        name.replace("vm03", "vm03"): digest for name, digest in source.items()
    }
    items = {i.vm_name: i for i in client.protected_items(protected)}
    assert items["vm03"].status == "protected" and items["vm03"].last_backup_status == "completed"


def test_a_restore_never_replaces_an_existing_vm(client: Client, protected: str) -> None:
    client.wait(client.backup_now(protected, "vm01"))
    [rp] = client.recovery_points(protected, "vm01")
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.restore(rp.recovery_point_id, "vm02")
    assert caught.value.code == "RestoreTargetExists"
    assert event_count(client) == before
    client.wait(client.restore(rp.recovery_point_id, "vm01-copy"))
    again = client.wait(client.restore(rp.recovery_point_id, "vm01-copy"))  # created since discovery
    assert (again.status, again.error_code) == ("failed", "RestoreTargetExists")


def test_restore_across_regions_is_refused(client: Client, protected: str) -> None:
    client.wait(client.backup_now(protected, "vm01"))
    [rp] = client.recovery_points(protected, "vm01")
    with pytest.raises(OrchestratorError) as caught:
        client.restore(rp.recovery_point_id, "vm01-west", region="japanwest")
    assert caught.value.code == "CrossRegionRestoreUnsupported"


def test_restore_disks_writes_verified_images_to_a_directory(client: Client, protected: str, tmp_path: Path) -> None:
    client.wait(client.backup_now(protected, "vm05"))
    [rp] = client.recovery_points(protected, "vm05")
    job = client.wait(
        client.restore(rp.recovery_point_id, "vm05-disks", mode="disks", target_dir=str(tmp_path / "out"))
    )
    assert job.status == "completed" and job.result["target"] == str(tmp_path / "out" / "vm05-disks")
    for name, path in _disks(client, "vm05").items():  # in a folder of their own, named for the target
        assert _sha(tmp_path / "out" / "vm05-disks" / f"{name}.img") == _sha(path)
    assert not (tmp_path / "out" / "vm05-disks" / ".restore-claim").exists()


def test_a_second_backup_while_one_runs_is_refused(client: Client, protected: str) -> None:
    client._runtime.close_workers()  # keep the first backup in progress
    client.backup_now(protected, "vm01")
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.backup_now(protected, "vm01")
    assert caught.value.code == "BackupAlreadyInProgress"
    assert event_count(client) == before


def test_an_unprotected_vm_cannot_be_backed_up(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    with pytest.raises(OrchestratorError) as caught:
        client.backup_now(discovered_vault, "vm01")
    assert caught.value.code == "VmNotProtected"


def test_after_a_one_percent_change_the_next_backup_stores_about_one_percent(bulk: Path) -> None:
    inventory = write_fabric(bulk / "fabric", {"default": [vm_entry("big", "japaneast")]}, disk_mib=400)
    with Client(data_dir=bulk / "data", fabric=inventory) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["big"]))
        client.wait_all(client.protect(vault, ["big"]))
        first = client.wait(client.backup_now(vault, "big"))
        [(_, disk)] = client._runtime.fabric.disk_paths("default/rg-japaneast/big")
        with disk.open("r+b") as f:  # change 1% of the disk: 4 MiB in the middle
            f.seek(200 * MIB)
            f.write(os.urandom(4 * MIB))
        second = client.wait(client.backup_now(vault, "big"))
    logical = second.result["logical_bytes"]
    assert logical == 400 * MIB
    assert 0 < first.result["stored_bytes"] <= logical
    assert second.result["stored_bytes"] <= 0.015 * logical
    assert second.bytes_done == second.bytes_total == logical  # progress in bytes


def test_a_backup_task_delivered_twice_adds_nothing(client: Client, protected: str) -> None:
    from workers import tasks

    job_id = client.backup_now(protected, "vm01")
    client.wait(job_id)
    before = event_count(client)
    assert tasks.backup(client._runtime.worker_context(), job_id) == "already ended"
    assert event_count(client) == before
    assert len(client.recovery_points(protected, "vm01")) == 1


def test_the_end_of_the_transfer_is_stored_with_the_recovery_point(client: Client, protected: str) -> None:
    """The worker reports progress on the way (25%, 50%, 75%); 100% is stored in the same save as
    the recovery point and the job's completion, not as a report of its own."""
    job = client.wait(client.backup_now(protected, "vm01"))
    assert job.status == "completed" and job.bytes_done == job.bytes_total == job.result["logical_bytes"] > 0
    app = client._runtime.app
    mine = [n for n in app.recorder.select_notifications(start=1, limit=100_000) if str(n.originator_id) == job.job_id]
    topics = [app.mapper.to_domain_event(n).TOPIC for n in mine]
    assert topics.count("backup.job.progressed") == 1
    progress, completed = mine[topics.index("backup.job.progressed")], mine[topics.index("backup.job.completed")]
    assert completed.id == progress.id + 1 and completed.originator_version == progress.originator_version + 1
