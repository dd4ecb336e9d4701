"""The block size (BACKUP_BLOCK_SIZE): what a backup cuts disks into, recorded per disk in its
manifest, so that a scattered change stores about one block per write and a vault holds points of
different block sizes, each restored byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

from orchestrator import Client
from tests.e2e.test_vault_store_findings import inventory, protected
from workers.manifests import DiskManifest
from workers.vaultcrypto import vault_kek
from workers.vaultstore import VaultStore, open_vault_store

MIB = 1024 * 1024
KIB = 1024


def _store(client: Client, vault: str) -> VaultStore:
    from uuid import UUID

    return open_vault_store(client.settings.vault_store_path, None, UUID(vault), vault_kek(client.settings))


def _disk_file(tmp: Path, vm: str, index: int = 0) -> Path:
    disk = "os" if index == 0 else f"data{index}"
    [path] = (tmp / "fabric" / "disks").glob(f"*-{vm}-{disk}.img")
    return path


def _scatter(path: Path, seed: int, writes: int) -> None:
    """`writes` writes of 4 KiB of random data, each in a 4 MiB region of its own."""
    rng = random.Random(seed)
    with path.open("r+b") as f:
        for region in rng.sample(range(path.stat().st_size // (4 * MIB)), writes):
            f.seek(region * 4 * MIB + rng.randrange(0, 4 * MIB - 4 * KIB, 4 * KIB))
            f.write(rng.randbytes(4 * KIB))


def _restored(client: Client, point: str, tmp: Path, name: str) -> bytes:
    job = client.wait(client.restore(point, name, mode="disks", target_dir=str(tmp / "out")))
    assert job.status == "completed", job.error_message
    return (tmp / "out" / name / "vm01-os.img").read_bytes()


def test_a_scattered_change_stores_about_a_block_per_write_of_the_block_size(tmp_path: Path) -> None:
    stored = {}
    for block_size in (4 * MIB, 64 * KIB):
        tmp = tmp_path / str(block_size)
        disk = random.Random(1).randbytes(32 * MIB)
        with Client(data_dir=tmp / "data", fabric=inventory(tmp, ("vm01", [disk])), block_size=block_size) as client:
            vault = protected(client, ["vm01"])
            first = client.wait(client.backup_now(vault, "vm01"))
            assert first.status == "completed", first.error_message
            _scatter(_disk_file(tmp, "vm01"), seed=2, writes=5)
            second = client.wait(client.backup_now(vault, "vm01"))
            assert second.status == "completed", second.error_message
            stored[block_size] = second.result["stored_bytes"]
            point = second.result["recovery_point_id"]
            manifest = _store(client, vault).read_manifest(point)
            assert [d.block_size for d in manifest.disks] == [block_size]
            assert len(manifest.disks[0].blocks) == 32 * MIB // block_size
            assert _restored(client, point, tmp, "back") == _disk_file(tmp, "vm01").read_bytes()
            older = first.result["recovery_point_id"]
            assert _restored(client, older, tmp, "before") == disk
    # Five blocks stored again after five scattered 4 KiB writes: 20 MiB at 4 MiB, 320 KiB at 64 KiB.
    assert 5 * 4 * MIB <= stored[4 * MIB] < 5 * 4 * MIB + 4 * KIB
    assert 5 * 64 * KIB <= stored[64 * KIB] < 5 * 64 * KIB + 4 * KIB


def test_a_vault_holds_points_of_different_block_sizes_each_restored_whole(tmp_path: Path) -> None:
    os_disk, data_disk = random.Random(3).randbytes(12 * MIB), random.Random(4).randbytes(8 * MIB) + bytes(4 * MIB)
    fabric = inventory(tmp_path, ("vm01", [os_disk, data_disk]))
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric, block_size=4 * MIB) as client:
        vault = protected(client, ["vm01"])
        first = client.wait(client.backup_now(vault, "vm01"))
        assert first.status == "completed", first.error_message
    _scatter(_disk_file(tmp_path, "vm01"), seed=5, writes=2)
    with Client(data_dir=data, fabric=fabric, block_size=256 * KIB) as client:
        second = client.wait(client.backup_now(vault, "vm01"))
        assert second.status == "completed", second.error_message
        manifest = _store(client, vault).read_manifest(second.result["recovery_point_id"])
        # The changed disk is read at the new size; the unchanged one keeps its blocks, and their size.
        assert [(d.name, d.block_size) for d in manifest.disks] == [("vm01-os", 256 * KIB), ("vm01-data1", 4 * MIB)]
        assert manifest.disks[1].blocks[2] is None  # its zeros are still not stored
        for job, disks in ((first, [os_disk, data_disk]), (second, None)):
            point = job.result["recovery_point_id"]
            out = tmp_path / f"out-{point[:8]}"
            restored = client.wait(client.restore(point, "copy", mode="disks", target_dir=str(out)))
            assert restored.status == "completed", restored.error_message
            expected = disks or [_disk_file(tmp_path, "vm01", 0).read_bytes(), data_disk]
            assert (out / "copy" / "vm01-os.img").read_bytes() == expected[0]
            assert (out / "copy" / "vm01-data1.img").read_bytes() == expected[1]
        verify = client.wait(client.verify(vault))
        assert verify.status == "completed" and verify.result["points"] == 2, verify.error_message


def test_a_manifest_written_before_block_sizes_were_recorded_is_read_as_4_mib() -> None:
    disk = DiskManifest.model_validate({"name": "os", "size": 8 * MIB, "blocks": ["a" * 64, None]})
    assert disk.block_size == 4 * MIB
