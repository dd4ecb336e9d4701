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
    per batch read). A crash between the two re-enqueues on restart, which RQ refuses as a duplicate."""

    name = "dispatcher"
    topics = (get_topic(Job.Created),)

    def __init__(
        self, app: Orchestrator, store: ReadStore, redis: Redis, job_timeout: int,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(app, store)
        self.orchestrator = app
        self.redis = redis
        self.job_timeout = job_timeout
        self.on_enqueued = on_enqueued  # wakes embedded workers

    def process(self, event: Any, notification_id: int) -> None:
        self.process_batch([(event, notification_id)], notification_id)

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """Enqueue each job's task, then record the position once for the batch."""
        enqueued = False
        for event, _ in events:
            # A job made and ended by one command (unregister, stop protection) needs no worker.
            enqueued |= bool(
                is_async(event.operation)
                and self.orchestrator.open_job(event.originator_id) is not None
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
        for row in queries.jobs(self.store, status="in_progress"):
            operation = Operation(row.operation)
            if is_async(operation) and row.created_seq <= dispatched:
                outcome = self._reconcile(operation, row.job_id, row.attempts)
                if outcome:
                    counts[outcome] += 1
        return counts

    def _reconcile(self, operation: Operation, job_id: str, attempts: int) -> str | None:
        try:
            rq_job = RqJob.fetch(rq_job_id(operation, job_id), connection=self.redis)
            status = rq_job.get_status()
        except NoSuchJobError:
            if enqueue(self.redis, operation, job_id, self.job_timeout):
                self.on_enqueued()
                log.warning("job %s had no RQ job (Redis lost it?); enqueued again", job_id)
                return "requeued"
            return None
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return None
        result = rq_job.latest_result()
        detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        lost = any("Abandoned" in line for line in detail)  # RQ's AbandonedJobError: the worker died
        code = "WorkerLost" if lost else "WorkerError"
        reason = (
            "the worker running it stopped (its process died or lost Redis)"
            if lost
            else f"the worker raised: {detail[0] if detail else status.value}"
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
