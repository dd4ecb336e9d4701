"""The vault store with `rq worker` processes on PostgreSQL and Redis: storage figures stay exact
when a backup's worker is SIGKILLed mid-snapshot and the backup is retried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, wait_for

pytestmark = pytest.mark.integration

def test_finding_18_a_backup_killed_mid_snapshot_and_retried_is_counted_exactly(tmp_path: Path,
                                                                                deployment: Deployment) -> None:
    # The post-snapshot script runs once every block is stored, before the manifest: the first run
    # hangs there and its worker is killed; the retry finds every block there already.
    fabric = tmp_path / "slowfabric"
    fabric.mkdir()
    marker = tmp_path / "hung-once"
    (fabric / "post.sh").write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then touch {marker}; sleep 120; fi\n")
    (fabric / "post.sh").chmod(0o755)
    inventory = write_fabric(fabric, {"default": [vm_entry(
        "db", "japaneast", os={"type": "linux", "version": "Ubuntu 16.04"},
        freeze={"pre_script": None, "post_script": "post.sh", "script_timeout_s": 300})]}, disk_mib=2)
    deployment.env["BACKUP_FABRIC"] = str(inventory)
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["db"]), timeout=60)
        client.wait_all(client.protect(vault, ["db"]), timeout=60)
        job_id = client.backup_now(vault, "db")
        wait_for(marker.exists, 60, "the backup to reach its post-snapshot script")
        store = client._runtime.worker_context().vault_store(vault)  # type: ignore[arg-type]
        written = store.stored_bytes()
        assert store.manifest_ids() == [] and written > 0  # blocks written, no manifest

        killed_at = time.monotonic()
        for name in ("worker0", "worker1"):  # SIGKILL both: whichever runs the snapshot dies in it
            deployment.kill(name)
        deployment.start("worker2")
        job = client.wait(job_id, timeout=180)
        assert job.status == "completed" and job.attempts == 2, (job.error_code, job.error_message, deployment.logs())
        assert time.monotonic() - killed_at < 170
        assert job.result["stored_bytes"] == 0  # the retry stored nothing itself: the dead attempt had

        measured = client.check_vault(vault)["stored_bytes"]
        assert measured == written
        assert client.dashboard(vault).vaults[0].storage_stored_bytes == measured
        collected = client.wait(client.run_retention(vault), timeout=60)
        assert collected.result["blocks_removed"] == 0
        assert client.dashboard(vault).vaults[0].storage_stored_bytes == client.check_vault(vault)["stored_bytes"]
