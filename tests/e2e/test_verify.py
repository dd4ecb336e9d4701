"""Verification (issue 17, part 6): `verify` reads recovery points back and checks every block, once
per run however many points share it; each point carries its last verify in the recovery points read
model, a failed one is a dashboard alert naming the point and the block, and the scheduler starts a
verify per vault every BACKUP_VERIFY_INTERVAL_DAYS."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.clock import ManualClock
from tests.helpers import CLOCK_START, event_count


def _protected(client: Client) -> str:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["vm01", "vm02"]))
    client.wait_all(client.protect(vault, ["vm01", "vm02"]))
    for _ in range(2):  # two points of each VM, sharing their unchanged blocks
        client.wait_all([client.backup_now(vault, vm) for vm in ("vm01", "vm02")])
    return vault


def _block_file(tmp_path: Path, vault: str, digest: str) -> Path:
    [path] = [p for p in (tmp_path / "data" / "vaultstore" / vault / "blocks").rglob(digest) if p.is_file()]
    return path


def test_verify_reads_each_block_once_and_records_each_point(client: Client, tmp_path: Path) -> None:
    vault = _protected(client)
    job = client.wait(client.verify(vault))
    assert job.status == "completed" and job.result["points"] == 4 and job.result["failed"] == 0
    store = client._runtime.worker_context().vault_store(UUID(vault))
    manifests = [store.read_manifest(m) for m in store.manifest_ids()]
    named = [b for m in manifests for disk in m.disks for b in disk.blocks if b]
    assert job.result["blocks_read"] == len(set(named)) < len(named)  # a block shared by points: read once
    points = client.recovery_points(vault)
    assert {p.verify_status for p in points} == {"ok"} and all(p.last_verified_at for p in points)

    one = client.wait(client.verify(vault, vm_name="vm01"))
    assert one.result["points"] == 2 and one.vm_name == "vm01"
    [newest, *_] = client.recovery_points(vault, "vm02")
    assert client.wait(client.verify(vault, recovery_point_id=newest.recovery_point_id)).result["points"] == 1


def test_a_corrupt_block_fails_the_points_that_use_it_and_raises_an_alert(client: Client, tmp_path: Path) -> None:
    vault = _protected(client)
    points = client.recovery_points(vault, "vm01")
    store = client._runtime.worker_context().vault_store(UUID(vault))
    manifest = store.read_manifest(points[0].recovery_point_id)
    digest = next(b for disk in manifest.disks for b in disk.blocks if b)
    block = _block_file(tmp_path, vault, digest)
    block.chmod(0o600)
    block.write_bytes(b"rot" + block.read_bytes()[3:])
    job = client.wait(client.verify(vault))
    assert job.status == "completed_with_warnings" and job.result["failed"] == 2
    assert {w["code"] for w in job.warnings} == {"VerifyFailed"} and all(digest in w["message"] for w in job.warnings)
    rows = {p.recovery_point_id: p for p in client.recovery_points(vault)}
    assert {rows[p.recovery_point_id].verify_status for p in points} == {"failed"}
    assert all(digest in rows[p.recovery_point_id].verify_problem for p in points)
    assert {p.verify_status for p in client.recovery_points(vault, "vm02")} == {"ok"}
    alerts = [a for a in client.dashboard(vault).vaults[0].alerts if a.code == "VerifyFailed"]
    assert len(alerts) == 2 and all(a.vm_name == "vm01" and digest in a.message for a in alerts)


def test_verify_refuses_what_it_cannot_verify_and_stores_nothing(client: Client) -> None:
    vault = _protected(client)
    other = client.create_vault("vault-other", "japaneast", "rg")
    [point, *_] = client.recovery_points(vault)
    before = event_count(client)
    for call, code in (
        (lambda: client.verify(other, recovery_point_id=point.recovery_point_id), "RecoveryPointNotFound"),
        (lambda: client.verify(vault, vm_name="nosuch"), "VmNotRegistered"),
        (lambda: client.verify(vault, recovery_point_id="not-a-uuid"), "CommandInvalid"),
    ):
        with pytest.raises(OrchestratorError) as caught:
            call()
        assert caught.value.code == code
    assert event_count(client) == before


def test_the_scheduler_verifies_each_vault_once_a_period(tmp_path: Path, fabric: Path) -> None:
    clock = ManualClock(CLOCK_START + timedelta(hours=3))
    with Client(
        data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600, verify_interval_days=7
    ) as client:
        vault = _protected(client)
        client.run_scheduler()
        client.run_scheduler()  # the same period: no second verify
        first = client.jobs(operation="verify")
        assert len(first) == 1 and client.wait(first[0].job_id).result["points"] == 4
        before = {p.recovery_point_id for p in client.recovery_points(vault)}
        clock.advance(timedelta(days=7))
        client.wait_all(client.run_scheduler())  # the week's backups too, whose points may come after the verify
        verifies = client.jobs(operation="verify")
        assert len(verifies) == 2 and client.wait(verifies[0].job_id).result["points"] >= 4
        assert {p.verify_status for p in client.recovery_points(vault) if p.recovery_point_id in before} == {"ok"}


def test_backupctl_verify_every_vault(tmp_path: Path, fabric: Path) -> None:
    from orchestrator.entry.cli.main import app

    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        _protected(client)
        client.create_vault("vault-empty", "japaneast", "rg")
    env = {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["verify", "--json"], env=env)
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)
    assert sorted(j["result"]["points"] for j in jobs) == [0, 4] and {j["status"] for j in jobs} == {"completed"}
    refused = CliRunner().invoke(app, ["verify", "--vm", "vm01"], env=env)
    assert refused.exit_code != 0 and "CommandInvalid" in refused.output
