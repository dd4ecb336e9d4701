"""A job whose worker is killed is noticed within two minutes with the documented worker settings."""

from __future__ import annotations

import time

import pytest
import redis
from rq import Queue
from rq.job import Job as RqJob
from rq.job import JobStatus

from orchestrator.domain.values import Operation
from tests.deployment import Deployment, wait_for
from tests.helpers import REDIS_URL
from workers.queues import JOBS, rq_job_id

pytestmark = pytest.mark.integration


def test_a_job_whose_worker_was_killed_fails_as_worker_lost_within_two_minutes(deployment: Deployment) -> None:
    deployment.start("projections")
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        job_id = client.discover(vault)
        # Stand a task that hangs in for the real one (the real tasks finish too fast to be killed
        # mid-way): same RQ job id, enqueued as the dispatcher would, without retries.
        connection = redis.Redis.from_url(REDIS_URL)
        rq_id = rq_job_id(Operation.DISCOVERY, job_id)
        Queue(JOBS, connection=connection).enqueue("time.sleep", 600, job_id=rq_id, job_timeout=900)
        deployment.start("dispatcher")  # its enqueue of the same id is refused as a duplicate
        deployment.start("worker0")
        wait_for(lambda: RqJob.fetch(rq_id, connection=connection).get_status() == JobStatus.STARTED, 30,
                 "the worker to start the job")

        killed_at = time.monotonic()
        deployment.kill("worker0")  # SIGKILL the worker and its work horse
        job = client.wait(job_id, timeout=150)
        noticed_after = time.monotonic() - killed_at

        assert (job.status, job.error_code) == ("failed", "WorkerLost"), deployment.logs()
        assert "stopped" in job.error_message
        assert noticed_after < 120, f"noticed only after {noticed_after:.0f}s"
