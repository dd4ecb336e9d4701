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
from rq.job import JobStatus

from orchestrator.domain import Job
from orchestrator.domain.values import Operation
from orchestrator.write import commands as c
from orchestrator.write.application import Orchestrator
from projections.follower import Follower, FollowerThread
from projections.store import ReadStore
from workers.queues import (
    FAILURE,
    QUEUES,
    SERIALIZER,
    TASK_REFUSED,
    TaskJob,
    enqueue,
    is_async,
    note_failure,
    rq_job_id,
    started_registry,
)

log = logging.getLogger(__name__)

RECONCILER_PRINCIPAL = "system:reconciler"
CATCH_UP_BATCH = 1000  # notifications per read while the reconciler catches up with the log
# Reads per sweep at most: a long history is caught up over several sweeps, so the first sweep of a
# newly started dispatcher does not hold up its dispatching (both run in its thread).
CATCH_UP_READS_PER_SWEEP = 20
LOST = (
    "its worker stopped heart-beating (the worker killed, its machine stopped, or cut off from Redis), "
    "and RQ gave up on it"
)


class Dispatcher(Follower):
    """Enqueues each new job's task with an id derived from the job, then records its position (once
    per batch read). A crash between the two re-enqueues on restart, which RQ refuses as a duplicate.

    It reads the jobs' ending events too: a job whose end is in the same batch as its creation (made
    and ended by one command, or long over when a dispatcher catches up) needs no worker. One that
    ended after the batch is enqueued all the same, and its task finds it ended and does nothing."""

    name = "dispatcher"
    topics = (get_topic(Job.Created), *Job.ENDING_TOPICS)

    def __init__(
        self,
        app: Orchestrator,
        store: ReadStore,
        redis: Redis,
        job_timeout: int,
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
    or failed after its retries, and re-enqueues or fails them.

    Which jobs are in progress it learns from the event store, never from a read model (a read model
    changed by hand must not stop a job's reconciliation): the async jobs created and not ended,
    kept in memory, read from the start of the log on the first sweep and then from where it got
    to, up to the dispatcher's position (jobs past it are the dispatcher's business). A sweep costs
    a read of that position, the new jobs' events, and one pipelined round trip to Redis; a job's
    aggregate is loaded only when its RQ job needs action."""

    topics = Dispatcher.topics  # the jobs' creations, then their endings

    def __init__(
        self,
        app: Orchestrator,
        store: ReadStore,
        redis: Redis,
        job_timeout: int,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.store = store
        self.redis = redis
        self.job_timeout = job_timeout
        self.on_enqueued = on_enqueued
        self.open_jobs: dict[UUID, Operation] = {}  # async jobs created and not ended, as far as read
        self.read_up_to = 0  # the notification id the log has been read to

    def run_once(self) -> dict[str, int]:
        counts = {"requeued": 0, "failed": 0}
        for name in QUEUES:
            # Moves jobs whose worker stopped heart-beating to retry or failed, without waiting for
            # an idle worker's maintenance pass (which may be many minutes away); `note_failure`
            # notes in each that its process died, as the workers' own sweeps do.
            started_registry(self.redis, name).cleanup(exception_handlers=[note_failure])
        self._catch_up(self.store.position(Dispatcher.name))
        candidates = list(self.open_jobs.items())
        rq_jobs = self._rq_jobs([rq_job_id(operation, job_id) for job_id, operation in candidates])
        for (job_id, operation), rq_job in zip(candidates, rq_jobs, strict=True):
            outcome = self._reconcile(operation, job_id, rq_job)
            if outcome:
                counts[outcome] += 1
        return counts

    def _catch_up(self, dispatched: int) -> None:
        """The jobs' creations and endings from where the last sweep got to, up to `dispatched` (at
        most CATCH_UP_READS_PER_SWEEP reads: the next sweep goes on)."""
        for _ in range(CATCH_UP_READS_PER_SWEEP):
            if self.read_up_to >= dispatched:
                return
            batch = self.app.recorder.select_notifications(
                start=self.read_up_to + 1, limit=CATCH_UP_BATCH, stop=dispatched, topics=self.topics
            )
            for notification in batch:
                if notification.topic == self.topics[0]:
                    created = self.app.mapper.to_domain_event(notification)
                    if isinstance(created, Job.Created) and is_async(created.operation):
                        self.open_jobs[created.originator_id] = created.operation
                else:  # an ending: its id is all it takes
                    self.open_jobs.pop(UUID(str(notification.originator_id)), None)
            self.read_up_to = batch[-1].id if len(batch) == CATCH_UP_BATCH else dispatched

    def _rq_jobs(self, rq_ids: list[str]) -> list[TaskJob | None]:
        """Each RQ job (None: no such job), in one round trip: a sweep runs every few seconds over
        every job in progress. Read as JSON, and nothing it names is imported."""
        jobs = TaskJob.fetch_many(rq_ids, connection=self.redis, serializer=SERIALIZER)
        return [job if isinstance(job, TaskJob) else None for job in jobs]

    def _open_job(self, job_id: UUID) -> Job | None:
        """The job, loaded because its RQ job needs action; None (and forgotten) once it has ended
        (after the dispatcher's position, say)."""
        job = self.app.find(job_id, Job)
        if job is None or job.state.is_terminal:
            self.open_jobs.pop(job_id, None)
            return None
        return job

    def _reconcile(self, operation: Operation, job_id: UUID, rq_job: TaskJob | None) -> str | None:
        if rq_job is None:
            if self._open_job(job_id) is not None and enqueue(self.redis, operation, job_id, self.job_timeout):
                self.on_enqueued()
                log.warning("job %s had no RQ job (Redis lost it?); enqueued again", job_id)
                return "requeued"
            return None
        status = rq_job.get_status(refresh=False)
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return None
        job = self._open_job(job_id)
        if job is None:
            return None
        code, reason = failure_of(rq_job, status)
        self.app.handle(
            c.FailJob(
                job_id=job_id,
                error_code=code,
                error_message=f"{operation.value} job failed after {job.attempts} attempt(s): {reason}.",
            ),
            RECONCILER_PRINCIPAL,
        )
        self.open_jobs.pop(job_id, None)
        return "failed"


def failure_of(rq_job: TaskJob, status: str) -> tuple[str, str]:
    """The error code and reason for an RQ job RQ failed, from what was noted in it as it failed
    (workers.queues.FAILURE). The process running the job died (killed, its machine stopped, or cut
    off from Redis so that it stopped heart-beating): `WorkerLost`. The worker refused the RQ job (not
    one of our tasks on a job id): `TaskRefused`. The task raised (its own timeout included), or RQ
    failed it without a note: `WorkerError`, with the last line of RQ's record of it."""
    noted = rq_job.get_meta(refresh=False).get(FAILURE)
    note: dict[str, Any] = noted if isinstance(noted, dict) else {}
    if isinstance(note.get("refused"), str):
        return TASK_REFUSED, (
            f"the workers refused its RQ job ({TASK_REFUSED}: {note['refused'][:300]}), which the dispatcher did "
            "not write: check who can write to Redis, then submit the operation again"
        )
    error = note.get("error") if isinstance(note.get("error"), str) else _last_line(rq_job)
    if note.get("lost") is True:
        return "WorkerLost", (
            f"the process running it died before it finished: {LOST} ({error}). "
            "Check the worker machines (out of memory? restarted?) and the workers' logs, "
            "then submit the operation again"
        )
    if not error:
        return "WorkerError", (
            f"RQ marked its RQ job {status} without a reason. Check the workers' logs, then submit the operation again"
        )
    return "WorkerError", (
        f"the task raised {error}. Check the workers' logs for its traceback, then submit the operation again"
    )


def _last_line(rq_job: TaskJob) -> str:
    """The last line of RQ's record of the job's latest failure (the exception, for a task that raised)."""
    result = rq_job.latest_result()
    return ((result.exc_string or "").strip().splitlines() or [""])[-1][:2000] if result else ""


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
