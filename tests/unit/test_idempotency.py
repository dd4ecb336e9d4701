"""At-least-once delivery everywhere, and still every effect once."""

from __future__ import annotations

from collections import Counter
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError
from rq import Queue

from orchestrator import Client, OrchestratorError
from orchestrator.dispatch.dispatcher import Dispatcher
from orchestrator.domain.values import Operation
from orchestrator.write.commands import StartJob
from projections.jobs import JobsProjection
from tests.helpers import event_count, topics
from workers import tasks
from workers.queues import JOBS, enqueue, rq_job_id


def test_a_task_delivered_twice_adds_nothing_the_second_time(client: Client, discovered_vault: str) -> None:
    [job_id] = client.register(discovered_vault, ["vm01"])
    client.wait(job_id)
    before = event_count(client)
    assert tasks.register(client._runtime.worker_context(), job_id) == "already ended"
    assert event_count(client) == before


def test_a_dispatcher_replaying_from_scratch_enqueues_nothing_twice(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02"]))
    runtime = client._runtime
    queue = Queue(JOBS, connection=runtime.redis)
    enqueued_before = queue.count + queue.finished_job_registry.count
    replay = Dispatcher(runtime.app, runtime.store, runtime.redis, 60)
    replay.name = "dispatcher-replay"  # a dispatcher that lost its position: starts at zero
    assert replay.run_once() == 6  # discovery + two registrations seen again, made and ended
    assert queue.count + queue.finished_job_registry.count == enqueued_before
    assert topics(client)["backup.job.started"] == 3


def test_a_dispatcher_catching_up_enqueues_no_job_that_ended_in_what_it_reads(
    client: Client, discovered_vault: str
) -> None:
    """Even when RQ has forgotten the jobs (their results expired, Redis lost them): only the job still
    in progress goes to a worker."""
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02"]))
    runtime = client._runtime
    for thread in runtime.threads:  # no dispatcher and no workers from here on
        thread.stop()
    runtime.threads = []
    [open_job] = client.register(discovered_vault, ["vm03"])
    runtime.redis.flushdb()
    replay = Dispatcher(runtime.app, runtime.store, runtime.redis, 60)
    replay.name = "dispatcher-replay"
    assert replay.run_once() == 7  # four made, three of them ended
    assert Queue(JOBS, connection=runtime.redis).job_ids == [rq_job_id(Operation.REGISTER, open_job)]


def test_enqueueing_the_same_job_twice_is_refused_by_rq(client: Client) -> None:
    job_id = "6f1c0e3e-2f4b-4d59-9c56-1f0d1f6e2a10"
    redis = client._runtime.redis
    client._runtime.close()  # no workers: the job stays queued
    assert enqueue(redis, Operation.REGISTER, job_id, 60) is True
    assert enqueue(redis, Operation.REGISTER, job_id, 60) is False
    assert Queue(JOBS, connection=redis).job_ids == [rq_job_id(Operation.REGISTER, job_id)]


def test_a_projection_applies_an_event_once_even_if_offered_twice(client: Client, discovered_vault: str) -> None:
    runtime = client._runtime
    projection = JobsProjection(runtime.app, runtime.store)
    notification = runtime.app.recorder.select_notifications(start=1, limit=1, topics=projection.topics)[0]
    projection.process(runtime.app.mapper.to_domain_event(notification), notification.id)  # already seen
    assert len(client.jobs()) == 1


def test_reports_on_an_ended_job_are_ignored(client: Client, discovered_vault: str) -> None:
    [job_id] = client.register(discovered_vault, ["vm01"])
    client.wait(job_id)
    before = event_count(client)
    assert client._runtime.app.handle(StartJob(job_id=UUID(job_id), worker="late"), "worker:late") is False
    assert event_count(client) == before


def test_a_version_conflict_is_retried(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    app = client._runtime.app
    real_save, calls = app.save, Counter[str]()

    def conflicting_once(*args: object, **kwargs: object) -> object:
        calls["save"] += 1
        if calls["save"] == 1:
            raise IntegrityError("simulated concurrent writer")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(app, "save", conflicting_once)
    vault = client.create_vault("vault-a", "japaneast", "rg")
    assert calls["save"] == 2 and client.vaults()[0].vault_id == vault


def test_endless_conflicts_end_in_a_clear_error_and_store_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_conflicting(*args: object, **kwargs: object) -> object:
        raise IntegrityError("simulated concurrent writer")

    monkeypatch.setattr(client._runtime.app, "save", always_conflicting)
    with pytest.raises(OrchestratorError) as caught:
        client.create_vault("vault-a", "japaneast", "rg")
    assert caught.value.code == "ConcurrentModification" and "retry" in caught.value.message
    assert event_count(client) == 0


def test_a_read_model_whose_version_changed_is_rebuilt_from_history(tmp_path, fabric) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    with Client(data_dir=data, fabric=fabric) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        before = client.jobs()
        with client._runtime.store.transaction() as tx:  # an older release's table, without created_seq
            tx.execute("UPDATE view_versions SET version = 1 WHERE view = 'jobs'")
            tx.execute("DROP TABLE rm_jobs")
            tx.execute("CREATE TABLE rm_jobs (job_id TEXT PRIMARY KEY)")
    with Client(data_dir=data, fabric=fabric) as client:
        assert client.jobs() == before
