"""Finding 19: a job whose process dies is `WorkerLost` (RQ: AbandonedJobError, swept from the started
registry once the heartbeat lapses), and it is noticed within two minutes with the documented worker
settings. The process running a job is its worker (an RQ SimpleWorker: no work horse), killed on its
own or after a warm shutdown request, as a container runtime stops it (SIGTERM, then SIGKILL once the
grace period is over).

The job is a real backup whose work hangs in the VM's pre-snapshot script, enqueued as the dispatcher
would but without retries, so that one death ends it; each test kills the worker, waits for it to be
gone, and then waits for the outcome."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.domain.values import Operation
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, wait_for
from tests.helpers import REDIS_URL
from workers.queues import TASKS, fetch_job, queue, rq_job_id

pytestmark = pytest.mark.integration
LINUX = {"type": "linux", "version": "Ubuntu 16.04"}


@pytest.fixture
def hanging_backup(tmp_path: Path, deployment: Deployment) -> Iterator[tuple[str, int]]:
    """A backup job running in worker0, hanging in its pre-snapshot script: (job id, the pid of the
    script's parent, the worker, which leads the process group of the worker and the script)."""
    horse_file = tmp_path / "horse.pid"
    fabric = tmp_path / "hangfabric"
    fabric.mkdir()
    (fabric / "pre.sh").write_text(
        f"#!/bin/sh\necho $PPID > {horse_file}.tmp\nmv {horse_file}.tmp {horse_file}\nexec sleep 600\n"
    )
    (fabric / "pre.sh").chmod(0o755)
    deployment.env["BACKUP_FABRIC"] = str(
        write_fabric(
            fabric,
            {
                "default": [
                    vm_entry("db", "japaneast", os=LINUX, freeze={"pre_script": "pre.sh", "script_timeout_s": 900})
                ]
            },
            disk_mib=1,
        )
    )
    deployment.start_all(workers=1)
    horse = 0
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["db"]), timeout=60)
        assert {j.status for j in client.wait_all(client.protect(vault, ["db"]), timeout=60)} == {"completed"}
        deployment.kill("dispatcher")  # the test enqueues the backup itself
        job_id = client.backup_now(vault, "db")
        connection = redis.Redis.from_url(REDIS_URL)
        queue(connection).enqueue(
            TASKS[Operation.BACKUP],
            job_id,
            job_id=rq_job_id(Operation.BACKUP, job_id),
            job_timeout=900,
            result_ttl=3600,
            failure_ttl=3600,
        )  # no retry
        deployment.start("dispatcher")  # its enqueue of the same RQ job id is refused as a duplicate
        wait_for(horse_file.exists, 60, "the backup to reach its pre-snapshot script")
        horse = int(horse_file.read_text())
        try:
            yield job_id, horse
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(horse, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Dead (a zombie waiting for whoever adopted it to reap it counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_finding_19_a_job_whose_worker_is_stopped_warm_then_killed_fails_as_worker_lost(
    deployment: Deployment, hanging_backup: tuple[str, int]
) -> None:
    job_id, runner = hanging_backup
    worker = deployment.procs.pop("worker0")
    assert worker.pid == runner  # the job runs in the worker process itself
    worker.send_signal(signal.SIGTERM)  # a warm shutdown: the job goes on
    time.sleep(3)
    assert worker.poll() is None
    connection = redis.Redis.from_url(REDIS_URL)
    assert fetch_job(connection, rq_job_id(Operation.BACKUP, job_id)).get_status() == "started"
    killed_at = time.monotonic()
    os.killpg(runner, signal.SIGKILL)  # the grace period over: the worker and its script
    worker.wait()
    with deployment.client() as client:
        job = client.wait(job_id, timeout=150)
    noticed_after = time.monotonic() - killed_at
    assert (job.status, job.error_code) == ("failed", "WorkerLost"), (job.error_message, deployment.logs())
    assert "stopped heart-beating" in job.error_message and "AbandonedJobError" in job.error_message
    assert noticed_after < 120, f"noticed only after {noticed_after:.0f}s"


def test_finding_19_a_job_whose_worker_is_killed_fails_as_worker_lost_within_two_minutes(
    deployment: Deployment, hanging_backup: tuple[str, int]
) -> None:
    job_id, horse = hanging_backup
    worker = deployment.procs.pop("worker0")
    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)  # the worker alone: it cannot see its horse die after it
    worker.wait()
    os.killpg(horse, signal.SIGKILL)  # then the horse, as when the machine dies
    wait_for(lambda: _gone(horse), 10, "the horse to be gone")
    assert fetch_job(redis.Redis.from_url(REDIS_URL), rq_job_id(Operation.BACKUP, job_id)).get_status() == "started"
    with deployment.client() as client:
        job = client.wait(job_id, timeout=150)
    noticed_after = time.monotonic() - killed_at
    assert (job.status, job.error_code) == ("failed", "WorkerLost"), (job.error_message, deployment.logs())
    assert "stopped heart-beating" in job.error_message and "AbandonedJobError" in job.error_message
    assert noticed_after < 120, f"noticed only after {noticed_after:.0f}s"
