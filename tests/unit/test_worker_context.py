"""Point 7 of issue 15: a task receives what it uses from the worker that runs it. The distributed
worker (an RQ SimpleWorker: no fork) builds its context once, when it starts, hands that same
context to every task, and keeps a running job's heartbeat going; a job read without a worker's
context bound runs nothing."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from rq.executions import Execution

from orchestrator import Client
from orchestrator.domain.values import Operation
from orchestrator.runtime.worker import ProcessWorker
from tests.deployment import wait_for
from tests.helpers import wait_dispatched
from workers import tasks
from workers.queues import TaskRefusedError, fetch_job, queue, rq_job_id


def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fabric: Path) -> None:
    monkeypatch.setenv("BACKUP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKUP_FABRIC", str(fabric))


def test_a_worker_builds_its_context_once_and_hands_it_to_every_task(
    tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_env(monkeypatch, tmp_path, fabric)
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        runtime = client._runtime
        runtime.close_workers()  # the jobs stay queued, for the worker made here
        job_ids = client.register(vault, ["vm01", "vm02", "vm03"])
        jobs = queue(runtime.redis)
        wait_for(lambda: len(jobs.job_ids) == 3, 30, "the dispatcher to enqueue the registrations")
        wait_dispatched(client)

        contexts: list[tuple[int, Any]] = []
        real = tasks.register
        monkeypatch.setattr(
            tasks, "register", lambda ctx, job_id: contexts.append((os.getpid(), ctx)) or real(ctx, job_id)
        )
        worker = ProcessWorker(["jobs"], connection=runtime.redis)
        built = worker.context
        assert built is not None
        assert worker.work(burst=True)

        assert {j.status for j in client.wait_all(job_ids, timeout=30)} == {"completed"}
        assert contexts == [(os.getpid(), built)] * 3  # in this process (no fork), one context for all
        assert worker.context is None  # closed as the worker stopped


def test_a_job_without_a_worker_context_runs_nothing(client: Client, discovered_vault: str) -> None:
    client._runtime.close_workers()
    [job_id] = client.register(discovered_vault, ["vm01"])
    rq_id = rq_job_id(Operation.REGISTER, job_id)
    wait_for(lambda: rq_id in queue(client._runtime.redis).job_ids, 30, "the dispatcher to enqueue the job")
    job = fetch_job(client._runtime.redis, rq_id)
    with pytest.raises(TaskRefusedError):
        job.func  # noqa: B018
    ctx = client._runtime.worker_context()
    job.bind(lambda: ctx)
    bound = job.func
    assert isinstance(bound, functools.partial) and bound.func is tasks.register and bound.args == (ctx,)


def test_a_running_job_keeps_its_heartbeat(tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ's SimpleWorker alone gives a job one heartbeat lasting its whole timeout; this worker renews
    it every job monitoring interval, so that a dead worker's job is noticed in about a minute."""
    worker_env(monkeypatch, tmp_path, fabric)
    connection = fakeredis.FakeRedis()
    job_id = "6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"
    rq_job = queue(connection).enqueue(
        "workers.tasks.register", job_id, job_id=rq_job_id(Operation.REGISTER, job_id), job_timeout=600
    )
    worker = ProcessWorker(["jobs"], connection=connection, job_monitoring_interval=1)
    try:
        assert worker.get_heartbeat_ttl(rq_job) == 61  # not the job's timeout (600) and 60 more
        execution = worker.prepare_execution(rq_job)
        first = Execution.fetch(execution.id, rq_job.id, connection=connection).last_heartbeat
        time.sleep(2.5)
        later = Execution.fetch(execution.id, rq_job.id, connection=connection).last_heartbeat
        assert later > first
    finally:
        assert worker.beating is not None
        worker.beating.set()
        worker.teardown()
