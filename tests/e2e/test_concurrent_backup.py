"""Eight threads ask for a backup of the same VM at the same instant: exactly one backup runs, the
others are refused with BackupAlreadyInProgress and store nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator import Client, OrchestratorError
from tests.helpers import event_count

THREADS = 8


def race(client: Client, vault: str, vm: str) -> tuple[list[str], list[str]]:
    barrier = threading.Barrier(THREADS)
    started: list[str] = []
    refused: list[str] = []
    unexpected: list[BaseException] = []

    def ask() -> None:
        barrier.wait()
        try:
            started.append(client.backup_now(vault, vm))
        except OrchestratorError as exc:
            refused.append(exc.code)
        except BaseException as exc:
            unexpected.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not unexpected, unexpected
    return started, refused


def check_exactly_one(client: Client, vault: str, vm: str, *, runs: bool) -> None:
    """Race, then: one backup job, the others refused; with `runs`, it completes with one point."""
    before = event_count(client)
    started, refused = race(client, vault, vm)
    assert len(started) == 1 and refused == ["BackupAlreadyInProgress"] * (THREADS - 1)
    assert event_count(client) > before
    if runs:
        assert client.wait(started[0]).status == "completed"
        assert len(client.recovery_points(vault, vm)) == 1
    backups = [j for j in client.jobs(operation="backup") if j.vm_name == vm]
    assert [j.job_id for j in backups] == started


def protected_vm(client: Client) -> str:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["vm01"]))
    client.wait_all(client.protect(vault, ["vm01"]))
    return vault


@pytest.mark.parametrize("held", [True, False], ids=["backup-held-in-queue", "backup-running"])
def test_eight_threads_backing_up_one_vm_start_one_backup(tmp_path: Path, fabric: Path, held: bool) -> None:
    with Client(data_dir=tmp_path / "data", fabric=fabric, principal="ops", scheduler_interval=3600) as client:
        vault = protected_vm(client)
        if held:
            client._runtime.close_workers()  # the backup stays queued while the others are refused
        check_exactly_one(client, vault, "vm01", runs=not held)
