"""A running QEMU VM protected on PostgreSQL and Redis with `rq worker` processes: incremental
backups by dirty bitmap, each point restored equal to the disks at its instant, and a worker
SIGKILLed while it reads a backup's copy (the retry removes what it left in QEMU and is still
incremental, missing no change)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.fabric.qmp import Monitor
from tests.deployment import Deployment
from tests.qemu import MIB, QemuVm, qemu_inventory, two_disk_vm
from tests.qemu import short_dir as short_fabric_dir

pytestmark = pytest.mark.integration
OS = {"type": "linux", "version": "Debian 12"}


@pytest.fixture
def vm(bulk: Path) -> Iterator[QemuVm]:
    with two_disk_vm(bulk, 256, 64) as machine:
        yield machine


def _state(vm: QemuVm) -> dict[str, str]:
    return {d.name: hashlib.sha256(vm.content(d.name)).hexdigest() for d in vm.disks}


def _restored(client: Client, rp_id: str, out: Path, name: str) -> dict[str, str]:
    job = client.wait(client.restore(rp_id, name, mode="disks", target_dir=out), timeout=120)
    assert job.status == "completed", job.error_message
    return {disk: hashlib.sha256(Path(path).read_bytes()).hexdigest() for disk, path in job.result["disks"].items()}


def _qcow2_sha(image: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True)
        return hashlib.sha256(raw.read_bytes()).hexdigest()


def _protected(client: Client) -> str:
    vault = client.create_vault("vault-q", "japaneast", "rg")
    assert client.wait(client.discover(vault), timeout=60).result["new_vms"] == ["qvm1"]
    assert {j.status for j in client.wait_all(client.register(vault, ["qvm1"]), timeout=60)} == {
        "completed_with_warnings"
    }
    assert {j.status for j in client.wait_all(client.protect(vault, ["qvm1"]), timeout=60)} == {
        "completed_with_warnings"
    }
    return vault


def _write_random(vm: QemuVm, bulk: Path, disk: str, offset: int, size: int) -> None:
    source = bulk / "random.bin"
    source.write_bytes(os.urandom(size))
    vm.hmp(f'qemu-io {disk} "write -s {source} {offset} {size}"')
    source.unlink()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_fabric_dir() as path:
        yield path


def test_a_running_vm_backs_up_incrementally_through_rq_workers(
    short_dir: Path, bulk: Path, deployment: Deployment, vm: QemuVm
) -> None:
    deployment.env["BACKUP_FABRIC"] = str(qemu_inventory(short_dir / "fabric", {"qvm1": vm}, os=OS))
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = _protected(client)
        first_state = _state(vm)
        first = client.wait(client.backup_now(vault, "qvm1"), timeout=120)
        assert first.status == "completed_with_warnings", (first.error_message, deployment.logs())
        for offset in (10 * MIB, 100 * MIB, 200 * MIB):
            vm.write("os0", offset, b"\x33" * (256 * 1024))
        vm.write("data0", 40 * MIB, b"\x44" * (640 * 1024))
        second_state = _state(vm)
        second = client.wait(client.backup_now(vault, "qvm1"), timeout=120)
        assert second.status == "completed_with_warnings", (second.error_message, deployment.logs())
        assert second.result["read_bytes"] < 0.01 * second.result["logical_bytes"], second.result
        assert all("dirty bitmap" in how for how in second.result["tracking"].values())
        out = bulk / "out"
        for name, job, state in (("first", first, first_state), ("second", second, second_state)):
            point = job.result["recovery_point_id"]
            assert _restored(client, point, out, name) == state
            as_vm = client.wait(client.restore(point, f"{name}-vm"), timeout=120)
            assert as_vm.status == "completed", (as_vm.error_message, deployment.logs())
            assert {disk: _qcow2_sha(Path(path)) for disk, path in as_vm.result["disks"].items()} == state


def test_a_worker_killed_while_it_reads_the_copy_loses_no_change(
    tmp_path: Path, bulk: Path, deployment: Deployment, vm: QemuVm
) -> None:
    deployment.env["BACKUP_FABRIC"] = str(qemu_inventory(tmp_path / "qfabric", {"qvm1": vm}, os=OS))
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = _protected(client)
        assert client.wait(client.backup_now(vault, "qvm1"), timeout=120).status == "completed_with_warnings"
        _write_random(vm, bulk, "os0", 16 * MIB, 192 * MIB)  # enough for a read a kill can land in
        vm.write("data0", 8 * MIB, b"\x55" * 4096)
        state = _state(vm)
        job_id = client.backup_now(vault, "qvm1")
        deadline = time.monotonic() + 60
        while not _exporting(vm):
            assert time.monotonic() < deadline, ("the backup never exported its copy", deployment.logs())
            time.sleep(0.01)
        for name in ("worker0", "worker1"):
            deployment.kill(name)
        assert _exporting(vm)  # the killed attempt's export, job and overlay are still in QEMU
        deployment.start("worker2")
        job = client.wait(job_id, timeout=180)
        assert job.status == "completed_with_warnings", (job.error_code, job.error_message, deployment.logs())
        assert job.attempts == 2
        assert all("dirty bitmap" in how for how in job.result["tracking"].values()), job.result["tracking"]
        assert job.result["read_bytes"] < 200 * MIB + 8 * 256 * 1024
        assert not _exporting(vm)
        assert _restored(client, job.result["recovery_point_id"], bulk / "out", "after-kill") == state
        assert client.check_vault(vault)["clean"]


def _exporting(vm: QemuVm) -> bool:
    with Monitor(vm.qmp) as qmp:
        return any(e["id"].startswith("orch-") for e in qmp.execute("query-block-exports"))
