"""Redis down while commands arrive: commands are accepted, and the work runs once it is back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment import Deployment, deployment_fixture, wait_for
from tests.helpers import PrivateRedis, topics

pytestmark = pytest.mark.integration


@pytest.fixture
def outage_deployment(
    tmp_path: Path, fabric: Path, pg_schema: str, private_redis: PrivateRedis
) -> Iterator[Deployment]:
    yield from deployment_fixture(tmp_path, fabric, pg_schema, private_redis.url)


def test_commands_during_a_redis_outage_run_once_redis_is_back(
    outage_deployment: Deployment, private_redis: PrivateRedis
) -> None:
    deployment = outage_deployment
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)

        private_redis.stop()  # Redis holds nothing on disk: everything it had is gone
        job_ids = client.register(vault, [f"vm{i:02d}" for i in range(1, 21)])  # accepted regardless
        assert len(job_ids) == 20
        assert {j.status for j in client.jobs(operation="register")} == {"in_progress"}

        private_redis.start()
        for name in ("worker0", "worker1"):  # rq workers exit when Redis goes away; restart them
            deployment.kill(name)
            deployment.start(name)
        jobs = client.wait_all(job_ids, timeout=180)
        assert {j.status for j in jobs} == {"completed"}, deployment.logs()
        counts = topics(client)
        assert counts["backup.vm.registered"] == 20
        assert counts["backup.job.completed"] == 21
        started = Counter(j.attempts for j in jobs)
        assert started == {1: 20}  # none ran twice


def test_work_queued_in_redis_when_it_restarts_is_enqueued_again(
    outage_deployment: Deployment, private_redis: PrivateRedis
) -> None:
    deployment = outage_deployment
    deployment.start("dispatcher")
    deployment.start("projections")  # no workers yet: jobs wait in Redis
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        discovery = client.discover(vault)
        wait_for(lambda: private_redis_has_jobs(private_redis), 30, "the discovery job to be enqueued")
        private_redis.stop()
        private_redis.start()  # empty: the queued job is lost from Redis, not from the event store
        deployment.start("worker0")
        assert client.wait(discovery, timeout=60).status == "completed", deployment.logs()


def private_redis_has_jobs(server: PrivateRedis) -> bool:
    import redis
    from rq import Queue

    return Queue("jobs", connection=redis.Redis.from_url(server.url)).count > 0
