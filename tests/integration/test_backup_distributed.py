"""Backups and restores on PostgreSQL and Redis with `rq worker` processes, including a worker
killed in the middle of a snapshot."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from uuid import UUID

import pytest

from orchestrator.domain import Job
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, kill_a_backup_mid_snapshot
from tests.helpers import fabric_hanging_once
from workers import tasks

pytestmark = pytest.mark.integration
VMS = [f"vm{i:02d}" for i in range(1, 11)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ten_vms_protected_backed_up_and_one_restored_byte_for_byte(deployment: Deployment) -> None:
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        registrations = client.wait_all(client.register(vault, VMS), timeout=120)
        assert {(j.status, j.error_code, j.error_message) for j in registrations} == {("completed", "", "")}, (
            registrations,
            deployment.logs(),
        )
        protections = client.wait_all(client.protect(vault, VMS), timeout=120)
        assert {j.status for j in protections} == {"completed"}, deployment.logs()
        backups = client.wait_all([client.backup_now(vault, vm) for vm in VMS], timeout=180)
        assert {j.status for j in backups} == {"completed"}, deployment.logs()
        source = {name: _sha(path) for name, path in client._runtime.fabric.disk_paths("default/rg-japaneast/vm07")}
        [rp] = client.recovery_points(vault, "vm07")
        restore = client.wait(client.restore(rp.recovery_point_id, "vm07-restored"), timeout=120)
        assert restore.status == "completed", restore.error_message
        restored = client._runtime.fabric.find_vm("default", "vm07-restored")
        assert restored is not None
        assert {d.name: _sha(restored.disk_path(d)) for d in restored.spec.disks} == source
        assert client.check_vault(vault)["clean"]


def test_a_worker_killed_mid_snapshot_leaves_no_half_recovery_point(tmp_path: Path, deployment: Deployment) -> None:
    # The post-snapshot script runs after every block is stored and before the manifest is
    # committed: the worst moment to die. The first run hangs there; the retry passes quickly.
    inventory, marker = fabric_hanging_once(tmp_path, disk_mib=16)
    deployment.env["BACKUP_FABRIC"] = str(inventory)
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault, job_id, killed_at, _ = kill_a_backup_mid_snapshot(deployment, client, marker)
        assert client.recovery_points(vault, "db") == []

        job = client.wait(job_id, timeout=180)
        elapsed = time.monotonic() - killed_at
        assert job.status == "completed", (job.error_code, job.error_message, deployment.logs())
        assert job.attempts == 2 and elapsed < 150
        assert len(client.recovery_points(vault, "db")) == 1
        check = client.check_vault(vault)
        assert check["clean"] and check["orphans"] == []

        # The same task delivered once more adds nothing.
        before = client._runtime.app.recorder.max_notification_id()
        assert tasks.backup(client._runtime.worker_context(), job_id) == "already ended"
        assert client._runtime.app.recorder.max_notification_id() == before
        assert client._runtime.app.get(UUID(job_id), Job).state.value == "completed"


def test_after_a_one_percent_change_the_next_backup_stores_about_one_percent(
    bulk: Path, deployment: Deployment
) -> None:
    inventory = write_fabric(bulk / "bigfabric", {"default": [vm_entry("big", "japaneast")]}, disk_mib=400)
    deployment.env.update(BACKUP_FABRIC=str(inventory), BACKUP_VAULT_STORE=str(bulk / "vaultstore"))
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["big"]), timeout=60)
        client.wait_all(client.protect(vault, ["big"]), timeout=60)
        first = client.wait(client.backup_now(vault, "big"), timeout=120)
        [(_, disk)] = client._runtime.fabric.disk_paths("default/rg-japaneast/big")
        with disk.open("r+b") as f:  # 1% of the disk: 4 MiB in the middle
            f.seek(200 * 1024 * 1024)
            f.write(os.urandom(4 * 1024 * 1024))
        second = client.wait(client.backup_now(vault, "big"), timeout=120)
    assert first.status == second.status == "completed", deployment.logs()
    assert second.result["logical_bytes"] == 400 * 1024 * 1024
    assert second.result["stored_bytes"] <= 0.015 * second.result["logical_bytes"]


def test_an_encrypted_vm_backs_up_and_gets_its_keys_back_with_rq_workers(
    tmp_path: Path, deployment: Deployment
) -> None:
    import base64

    import yaml

    from orchestrator.fabric import BACKUP_SERVICE

    bek, kek = os.urandom(32), os.urandom(32)
    perms = ["get", "list", "backup", "restore"]
    inventory = write_fabric(
        tmp_path / "encfabric",
        {
            "default": [
                vm_entry(
                    "enc",
                    "japaneast",
                    encryption={"enabled": True, "key_vault": "kv-enc", "bek_secret": "bek-enc", "kek_key": "kek-enc"},
                )
            ]
        },
        key_vaults={
            "default": [
                {
                    "name": "kv-enc",
                    "region": "japaneast",
                    "access_policies": [{"principal": BACKUP_SERVICE, "keys": perms, "secrets": perms}],
                    "secrets": {"bek-enc": {"value": base64.b64encode(bek).decode()}},
                    "keys": {"kek-enc": {"value": base64.b64encode(kek).decode()}},
                }
            ]
        },
        disk_mib=1,
    )
    deployment.env.update(
        BACKUP_FABRIC=str(inventory), BACKUP_KEY_PROTECTION_KEY=base64.b64encode(os.urandom(32)).decode()
    )
    deployment.start_all(workers=1)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["enc"]), timeout=60)
        client.wait_all(client.protect(vault, ["enc"]), timeout=60)
        backup = client.wait(client.backup_now(vault, "enc"), timeout=120)
        assert backup.status == "completed", (backup.error_message, deployment.logs())
        [rp] = client.recovery_points(vault, "enc")
        assert rp.key_vault == "kv-enc"
        data = yaml.safe_load(inventory.read_text())
        data["subscriptions"][0]["key_vaults"][0].update(secrets={}, keys={})
        inventory.write_text(yaml.safe_dump(data))
        keys = client.wait(client.restore_keys(rp.recovery_point_id), timeout=120)
        assert keys.status == "completed", (keys.error_message, deployment.logs())
        kv = client._runtime.fabric.key_vault("default", "kv-enc")
        assert kv is not None
        assert (
            base64.b64decode(kv.secrets["bek-enc"].value) == bek and base64.b64decode(kv.keys["kek-enc"].value) == kek
        )
    assert bek.hex() not in deployment.logs() and base64.b64encode(bek).decode() not in deployment.logs()
