"""The dispatcher turns job requests in the event log into RQ jobs, and the reconciler makes
sure every job in progress is really being worked on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import as_text

from orchestrator import commands as c
from orchestrator.application import Orchestrator
from orchestrator.domain import Job
from orchestrator.domain.values import Operation
from orchestrator.follower import Follower, FollowerThread
from projections import queries
from projections.store import ReadStore
from workers.queues import QUEUES, enqueue, is_async, rq_job_id

log = logging.getLogger(__name__)

RECONCILER_PRINCIPAL = "system:reconciler"


class Dispatcher(Follower):
    """Enqueues each new job's task with an id derived from the job, then records its position (once
    per batch read). A crash between the two re-enqueues on restart, which RQ refuses as a duplicate.

    It reads the jobs' ending events too: a job whose end is in the same batch as its creation (made
    and ended by one command, or long over when a dispatcher catches up) needs no worker. One that
    ended after the batch is enqueued all the same, and its task finds it ended and does nothing."""

    name = "dispatcher"
    topics = (get_topic(Job.Created), *Job.ENDING_TOPICS)

    def __init__(
        self, app: Orchestrator, store: ReadStore, redis: Redis, job_timeout: int,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(app, store)
        self.redis = redis
        self.job_timeout = job_timeout
        self.on_enqueued = on_enqueued  # wakes embedded workers

    def process(self, event: Any, notification_id: int) -> None:
        self.process_batch([(event, notification_id)], notification_id)

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """Enqueue the task of each job made and not ended in the batch, then record the position once."""
        ended = {event.originator_id for event, _ in events if not isinstance(event, Job.Created)}
        enqueued = False
        for event, _ in events:
            enqueued |= bool(
                isinstance(event, Job.Created)
                and is_async(event.operation)
                and event.originator_id not in ended
                and enqueue(self.redis, event.operation, event.originator_id, self.job_timeout)
            )
        if enqueued:
            self.on_enqueued()
        with self.store.transaction() as tx:
            self.store.advance(tx, self.name, last_id)


class Reconciler:
    """Finds jobs in progress whose RQ job was lost (Redis restarted), abandoned by a dead worker,
    or failed after its retries, and re-enqueues or fails them."""

    def __init__(
        self, app: Orchestrator, store: ReadStore, redis: Redis, job_timeout: int,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.store = store
        self.redis = redis
        self.job_timeout = job_timeout
        self.on_enqueued = on_enqueued

    def run_once(self) -> dict[str, int]:
        counts = {"requeued": 0, "failed": 0}
        for name in QUEUES:
            # Moves jobs whose worker stopped heart-beating to retry or failed, without waiting for
            # an idle worker's maintenance pass (which may be many minutes away).
            StartedJobRegistry(name, connection=self.redis).cleanup()
        # Jobs the dispatcher has not reached yet are its business, not a loss.
        dispatched = self.store.position(Dispatcher.name)
        rows = [(Operation(row.operation), row) for row in queries.jobs(self.store, status="in_progress")]
        rows = [(operation, row) for operation, row in rows if is_async(operation) and row.created_seq <= dispatched]
        statuses = self._statuses([rq_job_id(operation, row.job_id) for operation, row in rows])
        for (operation, row), status in zip(rows, statuses, strict=True):
            outcome = self._reconcile(operation, row.job_id, row.attempts, status)
            if outcome:
                counts[outcome] += 1
        return counts

    def _statuses(self, rq_ids: list[str]) -> list[str | None]:
        """Each RQ job's status (None: no such job), in one round trip: a sweep runs every few seconds
        over every job in progress."""
        with self.redis.pipeline(transaction=False) as pipe:
            for rq_id in rq_ids:
                pipe.hget(RqJob.key_for(rq_id), "status")
            return [as_text(status) if status else None for status in pipe.execute()]

    def _reconcile(self, operation: Operation, job_id: str, attempts: int, status: str | None) -> str | None:
        if status is None:
            if enqueue(self.redis, operation, job_id, self.job_timeout):
                self.on_enqueued()
                log.warning("job %s had no RQ job (Redis lost it?); enqueued again", job_id)
                return "requeued"
            return None
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return None
        try:
            rq_job = RqJob.fetch(rq_job_id(operation, job_id), connection=self.redis)
        except NoSuchJobError:  # gone since the sweep read its status: the next sweep sees to it
            return None
        result = rq_job.latest_result()
        detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        lost = any("Abandoned" in line for line in detail)  # RQ's AbandonedJobError: the worker died
        code = "WorkerLost" if lost else "WorkerError"
        reason = (
            "the worker running it stopped (its process died or lost Redis)"
            if lost
            else f"the worker raised: {detail[0] if detail else status}"
        )
        self.app.handle(
            c.FailJob(
                job_id=UUID(job_id),
                error_code=code,
                error_message=f"{operation.value} job failed after {attempts} attempt(s): {reason}. "
                "Check the workers' logs, then submit the operation again.",
            ),
            RECONCILER_PRINCIPAL,
        )
        return "failed"


class DispatcherThread(FollowerThread):
    def __init__(self, dispatcher: Dispatcher, reconciler: Reconciler, poll: float, every: float) -> None:
        super().__init__([dispatcher], poll, name="dispatcher")
        self.reconciler = reconciler
        self.every = every
        self._last = 0.0

    def after_pass(self) -> None:
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        try:
            self.reconciler.run_once()
        except Exception:
            log.exception("reconciliation failed; will try again in %.0fs", self.every)
