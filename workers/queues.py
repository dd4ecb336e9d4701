"""Queue names, RQ job ids, retry policies and TTLs: every RQ naming decision in one place."""

from __future__ import annotations

from uuid import UUID

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from orchestrator.domain.values import Operation

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
}

# Tasks are idempotent reads and reports, so a retry after a crash is safe.
RETRIES = 2
# Keep RQ's record of a job long enough that a re-enqueue of the same id is refused as a duplicate
# (`unique=True`); after that the task itself sees its job has ended and does nothing.
RESULT_TTL = 7 * 24 * 3600
FAILURE_TTL = 7 * 24 * 3600


def rq_job_id(operation: Operation, job_id: UUID | str) -> str:
    return f"{operation.value}-{job_id}"


def is_async(operation: Operation) -> bool:
    return operation in TASKS


def enqueue(connection: Redis, operation: Operation, job_id: UUID | str, job_timeout: int) -> bool:
    """Enqueue the task for a job; False when that job is already enqueued (or ran)."""
    queue = Queue(JOBS, connection=connection)
    try:
        queue.enqueue(
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
