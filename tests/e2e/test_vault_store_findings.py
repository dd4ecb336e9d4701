"""The vault store through the client: full disks (real filesystems, filled), exact storage figures
after concurrent backups and collections, and the modes of what it writes."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.clock import ManualClock
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import need
from workers.vaultcrypto import SEAL_OVERHEAD

MIB = 1024 * 1024
BLOCK = 4 * MIB
R = "japaneast"


@pytest.fixture(autouse=True)
def _four_mib_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """These findings count blocks and bytes as 4 MiB blocks make them (tests/e2e/test_block_size.py
    covers the block size itself)."""
    monkeypatch.setenv("BACKUP_BLOCK_SIZE", str(BLOCK))


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A small filesystem of the test's own at `path`, unmounted at the end whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    need(mounted.returncode == 0, f"cannot mount a tmpfs at {path} (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # still busy: detach it now all the same


def fill(mount: Path, leave: int) -> Path:
    """Fill the filesystem at `mount` but for `leave` bytes (rounded down to its pages)."""
    filler = mount / "filler"
    st = os.statvfs(mount)
    room = st.f_bavail * st.f_frsize - leave
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = bytes(MIB)
        while room > 0:
            try:
                room -= os.write(fd, chunk[: min(room, MIB)])
            except OSError as error:  # something else wrote there since statvfs: the filesystem is full all the same
                if error.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def inventory(tmp: Path, *vms: tuple[str, list[bytes]]) -> Path:
    """A fabric whose VMs' disks hold exactly the bytes given (one entry per disk)."""
    path = write_fabric(tmp / "fabric", {"default": [vm_entry(name, R, disks=len(disks)) for name, disks in vms]})
    for name, disks in vms:
        for index, data in enumerate(disks):
            disk = "os" if index == 0 else f"data{index}"
            (tmp / "fabric" / "disks" / f"default-rg-{R}-{name}-{disk}.img").write_bytes(data)
    return path


def protected(client: Client, vms: list[str]) -> str:
    vault = client.create_vault("vault-east", R, "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, vms))
    client.wait_all(client.protect(vault, vms))
    return vault


def stored_on_dashboard(client: Client, vault: str) -> int:
    return client.dashboard(vault).vaults[0].storage_stored_bytes


def test_finding_17_a_full_vault_store_fails_the_backup_at_once_its_blocks_left_to_collection(tmp_path: Path) -> None:
    # Two disks, read one after the other: the first one's block fits, the second one's does not.
    fabric = inventory(tmp_path, ("vm01", [os.urandom(MIB), os.urandom(BLOCK)]))
    with (
        tmpfs(tmp_path / "vaults") as vaults,
        Client(data_dir=tmp_path / "data", fabric=fabric, vault_store=vaults) as client,
    ):
        vault = protected(client, ["vm01"])
        filler = fill(vaults, leave=2 * MIB)
        job = client.wait(client.backup_now(vault, "vm01"))
        assert (job.status, job.error_code, job.attempts) == ("failed", "VaultStoreFull", 1), job.error_message
        assert "full" in job.error_message and "BACKUP_VAULT_STORE" in job.error_message
        report = client.check_vault(vault)
        # The attempt removed its temporary files; the block it stored is left to collection.
        assert (report["stored_bytes"], len(report["orphans"]), report["temporary_files"]) == (
            MIB + SEAL_OVERHEAD,
            1,
            [],
        )
        assert client.recovery_points(vault, "vm01") == []

        filler.unlink()
        collected = client.wait(client.run_retention(vault)).result
        assert (collected["blocks_removed"], collected["bytes_freed"]) == (1, MIB + SEAL_OVERHEAD)
        assert client.check_vault(vault)["stored_bytes"] == 0
        assert client.wait(client.backup_now(vault, "vm01")).status == "completed"
        assert client.check_vault(vault)["clean"]


def test_finding_17_full_for_the_manifest_fails_the_backup_and_collection_takes_its_blocks(tmp_path: Path) -> None:
    fabric = inventory(tmp_path, ("vm01", [os.urandom(MIB)]))
    with (
        tmpfs(tmp_path / "vaults") as vaults,
        Client(data_dir=tmp_path / "data", fabric=fabric, vault_store=vaults) as client,
    ):
        vault = protected(client, ["vm01"])
        client.wait(client.run_retention(vault))  # the vault's directory, lock and usage record are there
        filler = fill(vaults, leave=MIB + 8192)  # room for the data key and the block (sealed), not the manifest
        job = client.wait(client.backup_now(vault, "vm01"))
        assert (job.status, job.error_code, job.attempts) == ("failed", "VaultStoreFull", 1), job.error_message
        assert "manifest" in job.error_message
        report = client.check_vault(vault)
        assert (report["stored_bytes"], len(report["orphans"]), report["temporary_files"]) == (
            MIB + SEAL_OVERHEAD,
            1,
            [],
        )
        assert list((vaults / vault / "manifests").iterdir()) == []
        filler.unlink()
        assert client.wait(client.run_retention(vault)).result["blocks_removed"] == 1
        assert client.check_vault(vault)["stored_bytes"] == 0


def test_finding_17_a_full_event_store_disk_is_event_store_unavailable(tmp_path: Path, fabric: Path) -> None:
    with (
        tmpfs(tmp_path / "data") as data,
        Client(data_dir=data, fabric=fabric, vault_store=tmp_path / "vaults") as client,
    ):
        client.create_vault("vault-east", R, "rg")
        filler = fill(data, leave=0)
        with pytest.raises(OrchestratorError) as refused:
            client.create_vault("vault-west", R, "rg")
        assert refused.value.code == "EventStoreUnavailable"
        assert "disk is full" in refused.value.message and "BACKUP_DATA_DIR" in refused.value.message
        filler.unlink()
        client.create_vault("vault-west", R, "rg")


def _blocks(count: int) -> list[bytes]:
    return [os.urandom(BLOCK) for _ in range(count)]


def test_finding_18_concurrent_backups_sharing_blocks_count_each_block_once(tmp_path: Path) -> None:
    # Three VMs holding the same three blocks in different orders, backed up at once: their
    # transfers cross, and each block is new to the vault when two of them store it.
    x = _blocks(3)
    orders = {"vm01": [0, 1, 2], "vm02": [2, 1, 0], "vm03": [1, 2, 0]}
    fabric = inventory(tmp_path, *((vm, [b"".join(x[i] for i in order)]) for vm, order in orders.items()))
    with Client(data_dir=tmp_path / "data", fabric=fabric, workers=3) as client:
        vault = protected(client, list(orders))
        jobs = client.wait_all([client.backup_now(vault, vm) for vm in orders])
        assert {j.status for j in jobs} == {"completed"}
        sealed = 3 * (BLOCK + SEAL_OVERHEAD)  # random data: stored as it is, sealed
        assert sum(j.result["stored_bytes"] for j in jobs) == sealed  # each block counted by one backup
        measured = client.check_vault(vault)["stored_bytes"]
        assert stored_on_dashboard(client, vault) == measured == sealed


def test_finding_18_collection_with_leftover_temporary_files_keeps_the_dashboard_exact(tmp_path: Path) -> None:
    fabric = inventory(tmp_path, ("vm01", [os.urandom(MIB)]), ("vm02", [os.urandom(MIB)]))
    clock = ManualClock(datetime(2026, 11, 1, tzinfo=UTC))
    with Client(data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600) as client:
        vault = protected(client, ["vm01", "vm02"])
        for vm in ("vm01", "vm02"):
            client.wait(client.backup_now(vault, vm, retain_until=clock.now() + timedelta(days=1)))
        client.set_soft_delete(vault, "disabled")
        client.wait(client.stop_protection(vault, "vm02", delete_data=True))  # its block goes at collection
        store = tmp_path / "data" / "vaultstore" / vault
        block_dir = next((store / "blocks").iterdir())
        (block_dir / ".tmp-left-by-a-killed-backup").write_bytes(os.urandom(300_000))
        (store / "manifests" / ".tmp-left-too").write_bytes(b"{")
        job = client.wait(client.run_retention(vault))
        assert (job.result["blocks_removed"], job.result["bytes_freed"]) == (1, MIB + SEAL_OVERHEAD)
        assert (job.result["temporary_files_removed"], job.result["temporary_bytes_removed"]) == (2, 300_001)
        report = client.check_vault(vault)
        assert report["clean"] and report["temporary_files"] == []
        assert stored_on_dashboard(client, vault) == report["stored_bytes"] == MIB + SEAL_OVERHEAD


def test_finding_15_vault_check_names_a_bad_manifest(tmp_path: Path, fabric: Path) -> None:
    from orchestrator.entry.cli.main import app

    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = protected(client, ["vm01"])
        client.wait(client.backup_now(vault, "vm01"))
    manifests = tmp_path / "data" / "vaultstore" / vault / "manifests"
    (manifests / f"{'0' * 8}-0000-0000-0000-{'0' * 12}.json").write_bytes(b"\x00 torn")
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "COLUMNS": "200",
        "BACKUP_SCHEDULER_INTERVAL": "3600",
    }
    checked = CliRunner().invoke(app, ["vault", "check", "vault-east"], env=env)
    assert checked.exit_code == 2, checked.output
    assert "VaultStoreDamaged" in checked.output and "00000000-0000-0000-0000-000000000000.json" in checked.output
    assert "is not a sealed manifest" in checked.output
    assert checked.exception is None or isinstance(checked.exception, SystemExit)  # no traceback


def test_finding_9_vault_store_every_directory_it_makes_is_0700_and_every_file_0600(tmp_path: Path) -> None:
    fabric = inventory(tmp_path, ("vm01", [os.urandom(MIB)]), ("vm02", [os.urandom(MIB)]))
    root = tmp_path / "vaults"
    old = os.umask(0o022)
    try:
        with Client(data_dir=tmp_path / "data", fabric=fabric, vault_store=root) as client:
            vault = protected(client, ["vm01", "vm02"])
            client.wait_all([client.backup_now(vault, vm) for vm in ("vm01", "vm02")])
            client.set_soft_delete(vault, "disabled")
            client.wait(client.stop_protection(vault, "vm02", delete_data=True))
            assert client.wait(client.run_retention(vault)).result["blocks_removed"] == 1
    finally:
        os.umask(old)
    made = [root, *root.rglob("*")]
    names = {p.name for p in made}
    assert {"blocks", "manifests", "collections", "usage"} <= names and any(n.endswith(".json") for n in names)
    assert any(len(n) == 64 and set(n) <= set("0123456789abcdef") for n in names)  # a block
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode) for p in made}
    assert modes == {name: 0o700 if (tmp_path / name).is_dir() else 0o600 for name in modes}


def test_finding_17_starting_on_a_full_data_dir_is_event_store_unavailable(tmp_path: Path, fabric: Path) -> None:
    with tmpfs(tmp_path / "data", size="1m") as data:
        with Client(data_dir=data, fabric=fabric, vault_store=tmp_path / "vaults") as client:
            client.create_vault("vault-east", R, "rg")
        filler = fill(data, leave=0)
        with pytest.raises(OrchestratorError) as refused:  # not a traceback from the store's library
            Client(data_dir=data, fabric=fabric, vault_store=tmp_path / "vaults").close()
        assert refused.value.code in ("EventStoreUnavailable", "ReadStoreUnavailable"), refused.value
        filler.unlink()
        with Client(data_dir=data, fabric=fabric, vault_store=tmp_path / "vaults") as client:
            assert [v.name for v in client.vaults()] == ["vault-east"]
