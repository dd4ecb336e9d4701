"""Finding 8: whoever can write to Redis cannot run code in the workers (or the reconciler). Payloads
are JSON, and a worker runs only the orchestrator's tasks on a job id: anything else planted in Redis
is failed without being unpickled, imported or called, and the worker carries on.

These run the embedded workers (RQ SimpleWorker threads on fakeredis); tests/integration/
test_rq_payloads.py runs the same against a real `rq worker` process and Redis."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job as RqJob
from rq.registry import FailedJobRegistry

from orchestrator import Client
from orchestrator.dispatch.dispatcher import Reconciler
from orchestrator.domain.values import Operation
from tests.deployment import wait_for
from tests.helpers import wait_dispatched
from tests.planting import Planted, plant, status
from workers.queues import JOBS, TASKS, rq_job_id

ENDED = ("finished", "failed")


def failed(redis: Redis, rq_id: str) -> bool:
    return status(redis, rq_id) == "failed" and rq_id in FailedJobRegistry(JOBS, connection=redis)


def test_finding_8_a_pickled_payload_planted_in_redis_is_not_executed(
    client: Client, discovered_vault: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    redis = client._runtime.redis
    exploit = pickle.dumps(Planted(marker))
    plant(redis, "planted-pickle", exploit, meta=exploit)  # RQ reads `meta` as soon as it fetches a job
    client._runtime.work_enqueued.set()

    wait_for(lambda: status(redis, "planted-pickle") in ENDED, 30, "a worker to take the planted job")
    assert not marker.exists()
    assert failed(redis, "planted-pickle")
    [job] = client.wait_all(client.register(discovered_vault, ["vm01"]))  # and the workers carry on
    assert job.status == "completed"
    assert not marker.exists()


def test_finding_8_a_json_payload_naming_another_function_is_not_run(
    client: Client, discovered_vault: str, tmp_path: Path
) -> None:
    """Named in JSON, as the workers read payloads now, and in the pickle they read before: neither
    runs (the function named is importable and would take the argument given)."""
    redis = client._runtime.redis
    as_json, as_pickle = tmp_path / "json", tmp_path / "pickle"
    plant(redis, "planted-json", json.dumps(["os.system", None, [f"touch {as_json}"], {}]).encode())
    plant(redis, "planted-pickle", pickle.dumps(("os.system", None, [f"touch {as_pickle}"], {})))
    client._runtime.work_enqueued.set()

    for rq_id in ("planted-json", "planted-pickle"):
        wait_for(lambda rq_id=rq_id: status(redis, rq_id) in ENDED, 30, f"a worker to take {rq_id}")
    assert not as_json.exists() and not as_pickle.exists()
    assert failed(redis, "planted-json") and failed(redis, "planted-pickle")
    [job] = client.wait_all(client.register(discovered_vault, ["vm01"]))
    assert job.status == "completed"


@pytest.mark.parametrize(
    "payload, rq_id",
    [
        (["workers.tasks.register", None, ["not-a-uuid"], {}], "register-not-a-uuid"),
        (
            ["workers.tasks.register", None, ["6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10", "x"], {}],
            "register-6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10",
        ),
        (
            ["workers.tasks.register", None, [], {"job_id": "6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"}],
            "register-6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10",
        ),
        (
            ["workers.tasks.register", "an instance", ["6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"], {}],
            "register-6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10",
        ),
        (
            ["workers.tasks.register", None, ["6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"], {}],
            "backup-6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10",
        ),  # a task under another task's RQ job id
        (
            ["workers.work.run_retention", None, ["6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"], {}],
            "retention-6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10",
        ),  # our code, but not a task
    ],
)
def test_finding_8_only_a_task_of_tasks_on_the_job_id_of_its_rq_job_runs(
    client: Client, payload: list[Any], rq_id: str
) -> None:
    from workers.queues import fetch_job

    redis = client._runtime.redis
    plant(redis, rq_id, json.dumps(payload).encode())
    client._runtime.work_enqueued.set()
    wait_for(lambda: status(redis, rq_id) == "failed", 30, "a worker to fail the planted job")
    result = fetch_job(redis, rq_id).latest_result()
    assert result is not None and (result.exc_string or "").startswith("TaskRefused: ")


def test_finding_8_the_reconciler_does_not_unpickle_a_planted_rq_job(tmp_path: Path, fabric: Path) -> None:
    """The RQ job of a job in progress replaced by a failed one whose `meta` is a pickle: the
    reconciler reads it as JSON and fails the job as refused, without running anything."""
    marker = tmp_path / "pwned"
    with Client(data_dir=tmp_path / "data", fabric=fabric, reconcile_interval=300) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        runtime = client._runtime
        runtime.close_workers()
        [job_id] = client.register(vault, ["vm01"])
        rq_id = rq_job_id(Operation.REGISTER, job_id)
        wait_for(
            lambda: status(runtime.redis, rq_id) == "queued" and client.jobs(status="in_progress"),
            30,
            "the dispatcher to enqueue the job",
        )
        wait_dispatched(client)
        runtime.redis.delete(RqJob.key_for(rq_id))
        Queue(JOBS, connection=runtime.redis).remove(rq_id)
        data = json.dumps([TASKS[Operation.REGISTER], None, [job_id], {}]).encode()
        plant(runtime.redis, rq_id, data, meta=pickle.dumps(Planted(marker)), status="failed")

        counts = Reconciler(runtime.app, runtime.store, runtime.redis, 60).run_once()

        assert not marker.exists()
        assert counts == {"requeued": 0, "failed": 1}
        job = client.wait(job_id, timeout=10)
        assert (job.status, job.error_code) == ("failed", "WorkerError")
