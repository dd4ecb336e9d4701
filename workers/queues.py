"""Queue names, RQ job ids, retry policies and TTLs: every RQ naming decision in one place; what a
worker may run, for both kinds of worker (the `rq worker` processes and the embedded threads); how
a worker hands its context to the task it runs; and how a failure is noted for the reconciler.

RQ's payloads are JSON, never pickle: unpickling runs code, and whoever can write to Redis must not
be able to run code in the workers, which hold the key protection key. JSON alone still lets such a
writer name any importable function (`os.system` with a string), so a worker runs only the task
functions of `TASKS`, each with exactly one argument, a job id, under the RQ job id `enqueue` gives
it; anything else is failed without importing or calling what it names. No callback named in an RQ
job is ever imported and no webhook is sent (`enqueue` registers none)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import AbandonedJobError, DeserializationError, DuplicateJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job as RqJob
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer, resolve_serializer
from rq.worker import BaseWorker, WorkerStatus

from orchestrator.domain.values import Operation

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

# One queue for all work. A worker serving a single queue dequeues with BLMOVE, so a job popped by a
# worker that dies at that instant is not lost (with several queues RQ uses BLPOP, which can lose
# it). Workers scale by replicas, not by queue.
JOBS = "jobs"
QUEUES = (JOBS,)

TASKS: dict[Operation, str] = {
    Operation.DISCOVERY: "workers.tasks.discover",
    Operation.REGISTER: "workers.tasks.register",
    Operation.CONFIGURE_PROTECTION: "workers.tasks.configure_protection",
    Operation.BACKUP: "workers.tasks.backup",
    Operation.RESTORE: "workers.tasks.restore",
    Operation.RESTORE_KEYS: "workers.tasks.restore_keys",
    Operation.RETENTION: "workers.tasks.retention",
    Operation.VERIFY: "workers.tasks.verify",
}
OPERATION_OF_TASK = {task: operation for operation, task in TASKS.items()}
SERIALIZER = JSONSerializer
TASK_REFUSED = "TaskRefused"  # how a refused RQ job's failure reads
# The key of an RQ job's `meta` under which a worker (or a sweep of the started registry) notes why
# the job failed, for the reconciler: {"error": "Type: message"}, and "lost": true when the process
# running it died (RQ's AbandonedJobError), or "refused": why, for a job that is not a task of ours.
FAILURE = "failure"

# Tasks are idempotent reads and reports, so a retry after a crash is safe.
RETRIES = 2
# Keep RQ's record of a job long enough that a re-enqueue of the same id is refused as a duplicate
# (`unique=True`); after that the task itself sees its job has ended and does nothing.
RESULT_TTL = 7 * 24 * 3600
FAILURE_TTL = 7 * 24 * 3600
STORE_CHECK_INTERVAL = 2.0  # seconds between checks of a worker's event store while it does not answer


def rq_job_id(operation: Operation, job_id: UUID | str) -> str:
    return f"{operation.value}-{job_id}"


def is_async(operation: Operation) -> bool:
    return operation in TASKS


class TaskJob(RqJob):
    """An RQ job as the workers and the reconciler read it: its function only if `refusal` finds
    nothing wrong, with the context of the worker running it bound (`bind`) as its first argument;
    never a callback or a webhook, whatever the job's hash names."""

    context_of: Callable[[], WorkerContext] | None = None

    def bind(self, context_of: Callable[[], WorkerContext]) -> None:
        """Give the task the worker's context: `context_of` returns it (or raises what keeps the
        worker from having one, a bad setting say, which fails the job with its code)."""
        self.context_of = context_of

    @property
    def func(self) -> Any:
        why = refusal(self)
        if why is not None:
            raise TaskRefusedError(why)
        if self.context_of is None:
            raise TaskRefusedError("no worker context is bound to it (a task runs in a worker of workers.queues)")
        return functools.partial(super().func, self.context_of())

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        """None are registered by `enqueue`: one in Redis was put there by someone else."""


class TaskRefusedError(Exception):
    """An RQ job that is not a task of ours on a job id."""


def note_failure(
    job: RqJob, exc_type: type[BaseException], exc_value: BaseException, _tb: TracebackType | Any = None
) -> bool:
    """An RQ exception handler: notes in the job's `meta` (FAILURE) why it failed, whether the task
    raised (RQ calls it from `perform_job`) or its process died (from a sweep of the started registry,
    with AbandonedJobError). Returns True: the next handler (RQ's logging) runs too."""
    error = f"{exc_type.__name__}: {exc_value}" if str(exc_value) else exc_type.__name__
    job.meta = {FAILURE: {"error": error[:2000], "lost": issubclass(exc_type, AbandonedJobError)}}  # ours alone
    untyped: Any = job  # RQ leaves save_meta unannotated
    try:
        untyped.save_meta()
    except RedisError as exc:
        log.warning("RQ job %s: why it failed (%s) not noted: %s", job.id, error, exc)
    return True


def refusal(job: RqJob) -> str | None:
    """Why a worker must not run `job`, or None when it is `enqueue`'s task on a job id. Looks at the
    names only: nothing the job names is imported."""
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return "its payload is not JSON"
    operation = OPERATION_OF_TASK.get(func_name or "")
    if operation is None:
        return f"it names {str(func_name)[:200]!r}, which is not a task of workers.queues.TASKS"
    if instance is not None or kwargs or not isinstance(args, list | tuple) or len(args) != 1:
        return "a task takes one argument, a job id, and nothing else"
    if not _is_uuid(args[0]) or job.id != rq_job_id(operation, args[0]):
        return "its argument is not the job id its RQ job id is made of"
    return None


def _is_uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and str(UUID(value)) == value
    except ValueError:
        return False


def queue(connection: Redis, name: str = JOBS) -> Queue:
    """The queue, reading and writing JSON payloads as `TaskJob`s."""
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=TaskJob)


def started_registry(connection: Redis, name: str = JOBS) -> StartedJobRegistry:
    return StartedJobRegistry(name, connection=connection, job_class=TaskJob, serializer=SERIALIZER)


def fetch_job(connection: Redis, rq_id: str) -> TaskJob:
    """An RQ job by id (NoSuchJobError when Redis has none), read as JSON."""
    job = TaskJob.fetch(rq_id, connection=connection, serializer=SERIALIZER)
    assert isinstance(job, TaskJob)
    return job


def enqueue(connection: Redis, operation: Operation, job_id: UUID | str, job_timeout: int) -> bool:
    """Enqueue the task for a job; False when that job is already enqueued (or ran)."""
    try:
        queue(connection).enqueue(
            TASKS[operation],
            str(job_id),
            job_id=rq_job_id(operation, job_id),
            unique=True,
            job_timeout=job_timeout,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            retry=Retry(max=RETRIES),
            description=f"{operation.value} job {job_id}",
        )
    except DuplicateJobError:
        return False
    return True


class TaskWorker(BaseWorker):
    """What both kinds of worker share (a base of `ProcessWorker` and the embedded `ThreadWorker`):

    - JSON payloads read as `TaskJob`s, whatever serializer or job class it is given (the `rq worker`
      command line passes RQ's pickle default unless told `--serializer json`: it is ignored, with a
      warning); an RQ job that is not one of our tasks on a job id is failed without running;
    - it hands its context to each task it runs (`task_context`), and notes why a job failed (`note_failure`);
    - it takes a job only while its event store answers (`stores_answer`): an outage would make
      the job fail and count as one of its attempts for nothing. Meanwhile it keeps its heartbeat
      and RQ's maintenance going, shows as `suspended` in RQ, and logs once per outage."""

    def __init__(self, queues: str | Queue | Sequence[str | Queue], *args: Any, **kwargs: Any) -> None:
        given = kwargs.pop("serializer", None)
        if given is not None and resolve_serializer(given) is not SERIALIZER:
            log.warning("workers read JSON payloads only: serializer %r ignored (use --serializer json)", given)
        job_class = kwargs.pop("job_class", None)
        if job_class not in (None, RqJob, TaskJob, "rq.job.Job"):
            log.warning("workers read jobs as workers.queues.TaskJob: job class %r ignored", job_class)
        listed = [queues] if isinstance(queues, str | Queue) else list(queues)
        given_queues = [q for q in listed if isinstance(q, Queue)]
        if given_queues and not args[2:3] and kwargs.get("connection") is None:
            kwargs["connection"] = given_queues[0].connection
        names = [q.name if isinstance(q, Queue) else q for q in listed]
        kwargs.update(serializer=SERIALIZER, job_class=TaskJob)
        super().__init__(names, *args, **kwargs)
        untyped: Any = self  # RQ leaves push_exc_handler unannotated
        untyped.push_exc_handler(note_failure)

    def task_context(self) -> WorkerContext:
        """The context this worker's tasks run with (or the error that keeps it from having one)."""
        raise NotImplementedError

    def stores_answer(self) -> bool:
        """Whether the event store answers now (cheaply: it is asked before every job)."""
        return True

    def pause(self, seconds: float) -> None:
        """Sleep between checks of an event store that does not answer (a stop request interrupts it)."""
        time.sleep(seconds)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[RqJob, Queue] | None:
        self.wait_for_stores()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def wait_for_stores(self) -> None:
        if self.stores_answer():
            return
        log.warning("worker %s: the event store does not answer; taking no job until it does", self.name)
        untyped: Any = self  # RQ leaves these two unannotated
        self.set_state(WorkerStatus.SUSPENDED)
        untyped.procline("Waiting for the event store")
        while True:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                untyped.run_maintenance_tasks()
            self.pause(STORE_CHECK_INTERVAL)
            if self.stores_answer():
                break
        log.warning("worker %s: the event store answers again; taking jobs", self.name)

    def execute_job(self, job: RqJob, queue: Queue) -> None:
        why = refusal(job)
        if why is None:
            if isinstance(job, TaskJob):
                job.bind(self.task_context)
            super().execute_job(job, queue)
            return
        log.error("worker %s: RQ job %s refused, failed without running: %s", self.name, job.id, why)
        job.retries_left = 0  # it would be refused again
        job.meta = {FAILURE: {"refused": why}}  # whatever was planted there goes
        untyped_job: Any = job  # RQ leaves save_meta unannotated
        untyped_job.save_meta()
        self.prepare_execution(job)
        IntermediateQueue(queue.key, connection=self.connection).remove(job.id)
        self.handle_job_failure(job, queue, exc_string=f"{TASK_REFUSED}: {why}")
        self.set_state(WorkerStatus.IDLE)
