"""Restores write only where they belong, never through a link, and never leave half a restore
(issue 14, findings 1, 2, 3, 9, 13 and 14)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import threading
import time
from pathlib import Path
from typing import ClassVar
from uuid import UUID

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.fabric.sample import vm_entry, write_fabric
from orchestrator.runtime.bootstrap import worker_context
from orchestrator.write import commands as c
from tests.helpers import event_count
from workers import tasks
from workers.vaultstore import VaultStore

BAD_NAMES = ["../../../tmp/x", "a/b", "", "new\nvm", "x" * 300, ".", "..", "vm\x00"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.exists() else set()


@pytest.fixture
def points(client: Client, discovered_vault: str) -> dict[str, str]:
    """vm05 and vm06 backed up: their recovery point ids."""
    vms = ["vm05", "vm06"]
    client.wait_all(client.register(discovered_vault, vms))
    client.wait_all(client.protect(discovered_vault, vms))
    jobs = client.wait_all([client.backup_now(discovered_vault, vm) for vm in vms])
    assert {j.status for j in jobs} == {"completed"}, [(j.error_code, j.error_message) for j in jobs]
    return {vm: client.recovery_points(discovered_vault, vm)[0].recovery_point_id for vm in vms}


@pytest.mark.parametrize("mode", ["vm", "disks"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_finding_1_a_bad_restore_target_name_is_refused_before_anything_is_written(
    client: Client, points: dict[str, str], tmp_path: Path, mode: str, name: str
) -> None:
    before, files = event_count(client), _files(tmp_path)
    with pytest.raises(OrchestratorError) as caught:
        client.restore(points["vm05"], name, mode=mode, target_dir=str(tmp_path / "out") if mode == "disks" else None)
    assert (caught.value.code, caught.value.field) == ("VmNameInvalid", "target_vm_name")
    assert event_count(client) == before and _files(tmp_path) == files  # nothing stored, nothing written


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("/", "TargetDirForbidden"),
        ("{data}", "TargetDirForbidden"),
        ("{data}/inside", "TargetDirForbidden"),
        ("{vaultstore}", "TargetDirForbidden"),
        ("{fabric}/disks", "TargetDirForbidden"),
        ("{tmp}", "TargetDirForbidden"),  # a parent of the data dir
        ("/proc/self", "TargetDirForbidden"),
        ("/dev", "TargetDirForbidden"),
        ("relative/out", "TargetDirInvalid"),
        ("{tmp}/a-file", "TargetDirInvalid"),
    ],
)
def test_finding_2_a_restore_target_directory_must_be_absolute_and_not_the_products_own(
    client: Client, points: dict[str, str], tmp_path: Path, fabric: Path, where: str, code: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"not a directory")
    target = where.format(
        data=client.settings.data_dir, vaultstore=client.settings.vault_store_path, fabric=fabric.parent, tmp=tmp_path
    )
    before, files = event_count(client), _files(tmp_path)
    with pytest.raises(OrchestratorError) as caught:
        client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=target)
    assert (caught.value.code, caught.value.field) == (code, "target_dir")
    assert event_count(client) == before and _files(tmp_path) == files


def test_finding_2_a_link_into_the_products_own_directories_is_forbidden(
    client: Client, points: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "innocent").symlink_to(client.settings.vault_store_path)
    with pytest.raises(OrchestratorError) as caught:
        client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=str(tmp_path / "innocent"))
    assert caught.value.code == "TargetDirForbidden"


def test_finding_2_the_worker_checks_the_target_directory_again(client: Client, points: dict[str, str]) -> None:
    """A restore job whose directory slipped past the client (here: sent straight to the application)
    fails in the worker, which writes nothing there."""
    store = client.settings.vault_store_path
    before = _files(store)
    job_id = client._runtime.app.handle(
        c.Restore(recovery_point_id=UUID(points["vm05"]), target_vm_name="vm05-r", mode="disks", target_dir=str(store)),
        client.settings.principal,
    )
    job = client.wait(str(job_id))
    assert (job.status, job.error_code) == ("failed", "TargetDirForbidden")
    assert _files(store) == before


def test_finding_2_each_vm_is_restored_into_a_folder_of_its_own(
    client: Client, points: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = client.wait(client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=str(out)))
    second = client.wait(client.restore(points["vm06"], "vm06-r", mode="disks", target_dir=str(out)))
    assert (first.status, second.status) == ("completed", "completed")
    assert sorted(p.name for p in out.iterdir()) == ["vm05-r", "vm06-r"]
    assert sorted(p.name for p in (out / "vm05-r").iterdir()) == ["vm05-os.img"]
    assert sorted(p.name for p in (out / "vm06-r").iterdir()) == ["vm06-os.img"]
    kept = _sha(out / "vm05-r" / "vm05-os.img")
    again = client.wait(client.restore(points["vm06"], "vm05-r", mode="disks", target_dir=str(out)))
    assert (again.status, again.error_code) == ("failed", "RestoreTargetExists")
    assert _sha(out / "vm05-r" / "vm05-os.img") == kept and sorted(p.name for p in (out / "vm05-r").iterdir()) == [
        "vm05-os.img"
    ]


def test_finding_3_planted_links_are_never_followed_nor_replaced(
    client: Client, points: dict[str, str], tmp_path: Path
) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.write_bytes(b"precious")
    (out / ".restoring-vm05-os.img").symlink_to(victim)  # where a restore wrote its temporary file
    (out / "vm05-os.img").symlink_to(tmp_path / "nowhere")  # a dangling link at the final name
    job = client.wait(client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=str(out)))
    assert job.status == "completed"
    assert victim.read_bytes() == b"precious" and not (tmp_path / "nowhere").exists()
    assert (out / "vm05-os.img").is_symlink() and (out / ".restoring-vm05-os.img").is_symlink()
    assert [Path(p) for p in job.result["disks"].values()] == [out / "vm05-r" / "vm05-os.img"]


@pytest.mark.parametrize("planted", ["dangling", "link-to-directory", "file", "non-empty-folder"])
def test_finding_3_a_restore_never_writes_into_or_over_what_is_at_its_folder(
    client: Client, points: dict[str, str], tmp_path: Path, planted: str
) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    folder = out / "vm05-r"
    if planted == "dangling":
        folder.symlink_to(tmp_path / "nowhere")
    elif planted == "link-to-directory":
        folder.symlink_to(victim)
    elif planted == "file":
        folder.write_bytes(b"a file")
    else:
        folder.mkdir()
        (folder / ".restoring-x").symlink_to(victim / "x")
    before = _files(tmp_path)
    job = client.wait(client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=str(out)))
    assert (job.status, job.error_code) == ("failed", "RestoreTargetExists")
    assert _files(tmp_path) == before and not (tmp_path / "nowhere").exists() and list(victim.iterdir()) == []


def test_finding_9_restored_disks_and_folders_are_private(
    client: Client, points: dict[str, str], tmp_path: Path
) -> None:
    disks = client.wait(client.restore(points["vm05"], "vm05-r", mode="disks", target_dir=str(tmp_path / "out")))
    vm = client.wait(client.restore(points["vm05"], "vm05-copy"))
    paths = [Path(p) for job in (disks, vm) for p in job.result["disks"].values()]
    assert paths and {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}
    assert {stat.S_IMODE(p.parent.stat().st_mode) for p in paths} == {0o700}


class _DiesOnSecondDisk(VaultStore):
    """The vault store as a work horse killed mid-restore sees it: the process dies (SIGKILL, no
    clean-up of any kind) when the restore asks for the first block of the second disk."""

    second: ClassVar[set[str]] = set()

    def get_block(self, digest: str) -> bytes:
        if digest in self.second:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().get_block(digest)


def test_finding_13_a_restore_killed_mid_way_completes_when_retried(tmp_path: Path) -> None:
    inventory = write_fabric(tmp_path / "fabric", {"default": [vm_entry("multi", "japaneast", disks=3)]}, disk_mib=2)
    with Client(data_dir=tmp_path / "data", fabric=inventory, principal="alice") as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["multi"]))
        client.wait_all(client.protect(vault, ["multi"]))
        assert client.wait(client.backup_now(vault, "multi")).status == "completed"
        rp = client.recovery_points(vault, "multi")[0].recovery_point_id
        disks = client._runtime.worker_context().vault_store(UUID(vault)).read_manifest(rp).disks
        _DiesOnSecondDisk.second = {b for b in disks[1].blocks if b} - {b for b in disks[0].blocks if b}
        client._runtime.close_workers()  # the job stays queued: this test runs its two attempts
        out = tmp_path / "out"
        job_id = client.restore(rp, "multi-r", mode="disks", target_dir=str(out))
        pid = os.fork()
        if pid == 0:  # the first attempt, in a process of its own (its own connections), killed half-way
            try:
                ctx = worker_context(client.settings)
                ctx.vault_store = lambda vault_id: _DiesOnSecondDisk(
                    ctx.vault_store_root / str(vault_id), ctx.vault_kek
                )  # type: ignore[method-assign]
                tasks.restore(ctx, job_id)
            finally:
                os._exit(0)  # not reached: the process is killed before
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        left = sorted(p.name for p in out.rglob("*"))
        assert f"{disks[0].name}.img" in left  # a complete-looking disk, and the rest of what it wrote
        tasks.restore(client._runtime.worker_context(), job_id)  # RQ's retry
        job = client.wait(job_id)
        assert (job.status, job.attempts) == ("completed", 2), job.error_message
        folder = out / "multi-r"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{d.name}.img" for d in disks)
        sources = dict(client._runtime.fabric.disk_paths("default/rg-japaneast/multi"))
        assert {d.name: _sha(folder / f"{d.name}.img") for d in disks} == {n: _sha(p) for n, p in sources.items()}


def test_finding_14_a_corrupt_block_fails_the_restore_at_once_and_leaves_nothing(
    client: Client, points: dict[str, str], tmp_path: Path
) -> None:
    rp = points["vm05"]
    vault = client.vaults()[0].vault_id
    store = client._runtime.worker_context().vault_store(UUID(vault))
    disk = store.read_manifest(rp).disks[0]
    index, digest = next((i, b) for i, b in enumerate(disk.blocks) if b)
    path = store.block_path(digest)
    path.write_bytes(b"\0" + path.read_bytes()[1:])  # one byte changed in the vault store
    out = tmp_path / "out"
    job = client.wait(client.restore(rp, "vm05-r", mode="disks", target_dir=str(out)))
    assert (job.status, job.error_code, job.attempts) == ("failed", "RestoreVerificationFailed", 1)
    assert (
        f"disk {disk.name} block {index}" in job.error_message
        and f"offset {index * 4 * 1024 * 1024}" in job.error_message
    )
    assert digest[:16] in job.error_message
    assert not (out / "vm05-r").exists()  # nothing that looks restored
    vm = client.wait(client.restore(rp, "vm05-copy"))
    assert (vm.status, vm.error_code) == ("failed", "RestoreVerificationFailed")
    assert client._runtime.fabric.find_vm("default", "vm05-copy") is None


def test_a_restore_fetches_eight_blocks_at_once_and_no_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import restore as restoring
    from workers.vaultstore import BLOCK_SIZE

    disk = os.urandom(20 * BLOCK_SIZE) + bytes(3 * BLOCK_SIZE) + os.urandom(BLOCK_SIZE // 2)
    inventory = write_fabric(tmp_path / "fabric", {"default": [vm_entry("big", "japaneast")]})
    (tmp_path / "fabric" / "disks" / "default-rg-japaneast-big-os.img").write_bytes(disk)
    with Client(data_dir=tmp_path / "data", fabric=inventory) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["big"]))
        client.wait_all(client.protect(vault, ["big"]))
        assert client.wait(client.backup_now(vault, "big")).status == "completed"
        [rp] = client.recovery_points(vault, "big")
        reading, most, lock = [0], [0], threading.Lock()
        fetch = VaultStore.get_block

        def slow_fetch(store: VaultStore, digest: str) -> bytes:
            with lock:
                reading[0] += 1
                most[0] = max(most[0], reading[0])
            try:
                time.sleep(0.05)  # a store far away: the fetches overlap
                return fetch(store, digest)
            finally:
                with lock:
                    reading[0] -= 1

        monkeypatch.setattr(VaultStore, "get_block", slow_fetch)
        out = tmp_path / "out"
        job = client.wait(client.restore(rp.recovery_point_id, "big-r", mode="disks", target_dir=str(out)))
        assert job.status == "completed", job.error_message
        restored = out / "big-r" / "big-os.img"
        assert restored.read_bytes() == disk and most[0] == restoring.IN_FLIGHT == 8
        assert restored.stat().st_blocks * 512 <= len(disk) - 3 * BLOCK_SIZE + BLOCK_SIZE  # the zeros are holes


def test_a_writeback_error_fails_the_disk_even_though_the_final_fsync_would_not_see_it() -> None:
    """Linux reports a write-back error once per open file: the background fdatasync a restore
    starts every WRITEBACK_EVERY bytes keeps the error it meets, and the disk's end raises it (here:
    a pipe, which cannot be synced)."""
    from workers.objects import Writeback
    from workers.restore import WRITEBACK_EVERY

    read, write = os.pipe()
    try:
        writeback = Writeback(lambda: os.fdatasync(write), WRITEBACK_EVERY)
        writeback.wrote(WRITEBACK_EVERY)  # starts a writeback, which fails
        with pytest.raises(OSError) as caught:
            writeback.wait()
        assert caught.value.errno == errno.EINVAL
        quiet = Writeback(lambda: os.fdatasync(write), WRITEBACK_EVERY)
        quiet.wrote(WRITEBACK_EVERY - 1)  # no writeback started: nothing to raise
        quiet.wait()
    finally:
        os.close(read)
        os.close(write)
