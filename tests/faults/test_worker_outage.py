"""Finding 16: a worker takes work only while its event store answers, and an outage never counts as a
job attempt. PostgreSQL is a private server of the test's own, stopped hard and started again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job as RqJob

from orchestrator.domain.values import Operation
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, deployment_fixture, wait_for
from tests.helpers import REDIS_URL, PrivatePostgres, need, redis_available
from workers.queues import JOBS, rq_job_id

pytestmark = [pytest.mark.integration, pytest.mark.faults]
VMS = [f"vm{i:02d}" for i in range(1, 6)]
LINUX = {"type": "linux", "version": "Ubuntu 16.04"}


@contextmanager
def deployed(tmp_path: Path, fabric: Path, server: PrivatePostgres) -> Iterator[Deployment]:
    need(redis_available(), "Redis is not answering")
    with contextmanager(deployment_fixture)(tmp_path, fabric, "public", REDIS_URL) as deployment:
        deployment.env.update(
            BACKUP_POSTGRES_PORT=str(server.port), BACKUP_POSTGRES_DBNAME="postgres", BACKUP_POSTGRES_USER="postgres"
        )
        yield deployment


def test_finding_16_a_worker_takes_no_job_while_the_event_store_is_down(
    tmp_path: Path, fabric: Path, private_pg: PrivatePostgres
) -> None:
    connection = redis.Redis.from_url(REDIS_URL)
    queued = Queue(JOBS, connection=connection)
    with deployed(tmp_path, fabric, private_pg) as deployment:
        deployment.start_all(workers=1)
        with deployment.client() as client:
            vault = client.create_vault("vault-east", "japaneast", "rg")
            assert client.wait(client.discover(vault), timeout=60).status == "completed"
            deployment.kill("worker0")
            job_ids = client.register(vault, VMS)
            wait_for(lambda: queued.count == len(VMS), 30, "the dispatcher to enqueue the registrations")

            private_pg.stop()
            deployment.start("worker0")
            wait_for(
                lambda: (
                    "suspended" in {w.get_state() for w in Worker.all(connection=connection)} or queued.count < len(VMS)
                ),
                90,
                "the worker to wait for its event store (or take a job)",
            )
            assert queued.count == len(VMS), deployment.logs()  # it took none of them
            private_pg.start()

            jobs = client.wait_all(job_ids, timeout=120)
            assert {(j.status, j.attempts) for j in jobs} == {("completed", 1)}, (
                [(j.status, j.attempts, j.error_code, j.error_message) for j in jobs],
                deployment.logs(),
            )


def test_finding_16_an_outage_mid_job_is_not_an_attempt(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    """A backup whose pre-snapshot script is held while PostgreSQL stops: released, the backup stores
    its blocks and its manifest and then cannot report; it waits for the store and runs again from
    the start (adopting its manifest), and completes in one attempt with one recovery point."""
    held, release = tmp_path / "held", tmp_path / "release"
    scripts = tmp_path / "heldfabric"
    scripts.mkdir()
    (scripts / "pre.sh").write_text(f"#!/bin/sh\ntouch {held}\nwhile [ ! -e {release} ]; do sleep 0.1; done\n")
    (scripts / "pre.sh").chmod(0o755)
    connection = redis.Redis.from_url(REDIS_URL)
    inventory = write_fabric(
        scripts,
        {"default": [vm_entry("db", "japaneast", os=LINUX, freeze={"pre_script": "pre.sh", "script_timeout_s": 300})]},
        disk_mib=1,
    )
    with deployed(tmp_path, inventory, private_pg) as deployment:
        deployment.start_all(workers=1)
        with deployment.client() as client:
            vault = client.create_vault("vault-east", "japaneast", "rg")
            client.wait(client.discover(vault), timeout=60)
            client.wait_all(client.register(vault, ["db"]), timeout=60)
            assert {j.status for j in client.wait_all(client.protect(vault, ["db"]), timeout=60)} == {"completed"}
            job_id = client.backup_now(vault, "db")
            wait_for(held.exists, 60, "the backup to reach its pre-snapshot script")

            private_pg.stop()
            release.touch()
            rq_key = RqJob.key_for(rq_job_id(Operation.BACKUP, job_id))
            wait_for(
                lambda: (
                    "waiting for the event store" in (tmp_path / "worker0.log").read_text()
                    or connection.hget(rq_key, "status") != b"started"
                ),
                90,
                "the backup to meet the outage (and wait, or give up its attempt)",
            )
            private_pg.start()

            job = client.wait(job_id, timeout=120)
            assert (job.status, job.attempts) == ("completed", 1), (
                job.error_code,
                job.error_message,
                deployment.logs(),
            )
            assert len(client.recovery_points(vault, "db")) == 1
            assert client.check_vault(vault)["clean"]
