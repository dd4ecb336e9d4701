"""The vault store with `rq worker` processes on PostgreSQL and Redis: storage figures stay exact
when a backup's worker is SIGKILLed mid-snapshot and the backup is retried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.deployment import Deployment, kill_a_backup_mid_snapshot
from tests.helpers import fabric_hanging_once

pytestmark = pytest.mark.integration


def test_finding_18_a_backup_killed_mid_snapshot_and_retried_is_counted_exactly(
    tmp_path: Path, deployment: Deployment
) -> None:
    # The post-snapshot script runs once every block is stored, before the manifest: the first run
    # hangs there and its worker is killed; the retry finds every block there already.
    inventory, marker = fabric_hanging_once(tmp_path, disk_mib=2)
    deployment.env["BACKUP_FABRIC"] = str(inventory)
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault, job_id, killed_at, written = kill_a_backup_mid_snapshot(deployment, client, marker)
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
