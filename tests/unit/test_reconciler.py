"""The reconciler's sweep over the jobs in progress: one whose RQ job Redis lost is enqueued again,
one whose RQ job failed is failed with the reason, the others are left alone."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from rq import Queue
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.results import Result

from orchestrator import Client
from orchestrator.dispatch.dispatcher import Reconciler
from orchestrator.domain import Job
from orchestrator.domain.values import JobState, Operation
from tests.deployment import wait_for
from tests.helpers import wait_dispatched
from workers.queues import JOBS, fetch_job, queue, rq_job_id


def test_a_sweep_requeues_a_lost_job_fails_a_failed_one_and_leaves_a_queued_one(tmp_path: Path, fabric: Path) -> None:
    with Client(data_dir=tmp_path / "data", fabric=fabric, reconcile_interval=300) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        runtime = client._runtime
        runtime.close_workers()  # the jobs stay queued
        lost, failed, queued = client.register(vault, ["vm01", "vm02", "vm03"])
        jobs = queue(runtime.redis)
        rq_ids = [rq_job_id(Operation.REGISTER, job_id) for job_id in (lost, failed, queued)]
        wait_for(
            lambda: set(rq_ids) <= set(jobs.job_ids) and len(client.jobs(status="in_progress")) == 3,
            30,
            "the dispatcher to enqueue the jobs and the projections to show them",
        )
        wait_dispatched(client)

        fetch_job(runtime.redis, rq_ids[0]).delete()  # Redis lost it
        rq_failed = fetch_job(runtime.redis, rq_ids[1])
        jobs.remove(rq_failed)
        rq_failed.set_status(JobStatus.FAILED)
        Result.create_failure(rq_failed, 60, "Traceback ...\nRuntimeError: fabric unreachable")

        counts = Reconciler(runtime.app, runtime.store, runtime.redis, 60).run_once()

        assert counts == {"requeued": 1, "failed": 1}
        assert sorted(jobs.job_ids) == sorted([rq_ids[0], rq_ids[2]])
        job = client.wait(failed, timeout=10)
        assert (job.status, job.error_code) == ("failed", "WorkerError")
        assert "the task raised RuntimeError: fabric unreachable" in job.error_message
        assert {client.job(lost).status, client.job(queued).status} == {"in_progress"}


def test_finding_12_reconciliation_does_not_depend_on_the_jobs_read_model(tmp_path: Path, fabric: Path) -> None:
    """Jobs in progress marked completed in `rm_jobs` by hand (SQL): the reconciler, which takes its
    jobs in progress from the event store, still enqueues again the one whose RQ job Redis lost and
    fails the one RQ failed."""
    with Client(data_dir=tmp_path / "data", fabric=fabric, reconcile_interval=300) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        runtime = client._runtime
        runtime.close_workers()
        lost, failed = client.register(vault, ["vm01", "vm02"])
        rq_lost, rq_failed = (rq_job_id(Operation.REGISTER, job_id) for job_id in (lost, failed))
        wait_for(
            lambda: (
                {rq_lost, rq_failed} <= set(Queue(JOBS, connection=runtime.redis).job_ids)
                and len(client.jobs(status="in_progress")) == 2
            ),
            30,
            "the dispatcher to enqueue the jobs",
        )
        wait_dispatched(client)
        with runtime.store.transaction() as tx:
            tx.execute(f"UPDATE {runtime.store.t('jobs')} SET status = 'completed'")
        assert client.jobs(status="in_progress") == []

        runtime.redis.delete(RqJob.key_for(rq_lost))  # Redis lost it
        Queue(JOBS, connection=runtime.redis).remove(rq_lost)
        runtime.redis.hset(RqJob.key_for(rq_failed), "status", "failed")  # RQ failed it
        Queue(JOBS, connection=runtime.redis).remove(rq_failed)

        counts = Reconciler(runtime.app, runtime.store, runtime.redis, 60).run_once()

        assert counts == {"requeued": 1, "failed": 1}
        assert Queue(JOBS, connection=runtime.redis).job_ids == [rq_lost]
        assert runtime.app.get(UUID(failed), Job).state is JobState.FAILED
        assert runtime.app.get(UUID(lost), Job).state is JobState.IN_PROGRESS
