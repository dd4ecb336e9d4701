"""The rq worker class of distributed workers: `rq worker jobs --serializer json --worker-class
orchestrator.runtime.worker.ProcessWorker` (JSON whatever the command line says, and only our tasks: see
`workers.queues.TaskWorker`; it takes no job while its event store does not answer).

An RQ `SimpleWorker`: each job runs in the worker process itself, no fork. The process is the
worker's composition root: it reads its settings and builds its context (the application on the
event store, making any missing table; the fabric; the stores) once, when it starts, or, if the
event store does not answer then, as soon as it does; and hands that context to every task it
runs. Its connections stay open from one job to the next, and none ever crosses a fork.

RQ's `SimpleWorker` does not heartbeat while a job runs, so a job whose worker died would only be
noticed once its whole timeout had passed; this one keeps the job's heartbeat going from a thread,
as RQ's forking worker does from its parent process (every `--job-monitoring-interval` seconds,
each lasting 60 seconds more), so that a dead worker's job is retried or failed within about a
minute and a half.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job as RqJob
from rq.queue import Queue
from rq.utils import now

from orchestrator.config import Settings, load_settings
from orchestrator.errors import OrchestratorError, ServiceUnavailableError
from orchestrator.runtime.bootstrap import worker_context
from workers.context import WorkerContext
from workers.outages import event_store_answers
from workers.queues import TaskWorker

log = logging.getLogger(__name__)
HEARTBEAT_GRACE = 60  # seconds a heartbeat outlives the next one's due time (as RQ's forking worker)


class ProcessWorker(TaskWorker, SimpleWorker):
    """RQ's SimpleWorker with the worker's context built once, and heartbeats while a job runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: Settings | None = None
        self.context: WorkerContext | None = None
        self.setup_error: OrchestratorError | None = None  # a bad setting: each job reports it
        self.build_tried = False
        self.beating: threading.Event | None = None  # set to stop the heartbeat thread of the running job
        try:
            self.settings = load_settings()
        except OrchestratorError as exc:
            log.warning("settings not read: %s (each job reports it)", exc)
            self.setup_error = exc
            return
        self.build_context()

    def build_context(self) -> bool:
        """Build the context if it is not built; False while the event store does not answer."""
        if self.context is not None or self.setup_error is not None:
            return True
        assert self.settings is not None
        try:
            self.context = worker_context(self.settings)
        except ServiceUnavailableError as exc:
            level = logging.DEBUG if self.build_tried else logging.WARNING
            log.log(level, "event store not prepared before the first job: %s (no job is taken until it answers)", exc)
            return False
        except OrchestratorError as exc:  # the cipher key, say: each job reports it with its code
            log.warning("event store not prepared: %s (each job reports it)", exc)
            self.setup_error = exc
        finally:
            self.build_tried = True
        return True

    def task_context(self) -> WorkerContext:
        if self.context is None:
            raise self.setup_error or ServiceUnavailableError(
                "EventStoreUnavailable", "the worker's event store did not answer", field="BACKUP_EVENT_STORE"
            )
        return self.context

    def stores_answer(self) -> bool:
        """The context is built (the event store answered once), and its event store answers now."""
        if not self.build_context():
            return False
        return self.context is None or event_store_answers(self.context.app)

    def get_heartbeat_ttl(self, job: RqJob, working_time: float = 0.0) -> int:
        """How long a running job's heartbeat lasts: until the next one is due, and a grace period."""
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE

    def prepare_execution(self, job: RqJob) -> Execution:
        """RQ records the job's execution (just before the job runs): its heartbeats start."""
        execution = super().prepare_execution(job)
        self.beating = threading.Event()
        threading.Thread(
            target=self.keep_beating, args=(job, execution, self.beating), name=f"heartbeat-{job.id}", daemon=True
        ).start()
        return execution

    def execute_job(self, job: RqJob, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            if self.beating is not None:
                self.beating.set()
                self.beating = None

    def keep_beating(self, job: RqJob, execution: Execution, stop: threading.Event) -> None:
        """Until `stop`: the worker's, the execution's and the job's heartbeats, each lasting one more
        interval and the grace period (RQ's forking worker does this from its parent process)."""
        ttl = self.get_heartbeat_ttl(job)
        while not stop.wait(self.job_monitoring_interval):
            try:
                with self.connection.pipeline() as pipeline:
                    self.heartbeat(ttl, pipeline=pipeline)
                    execution.heartbeat(job.started_job_registry, ttl, pipeline=pipeline)
                    job.heartbeat(now(), ttl, pipeline=pipeline, xx=True)
                    pipeline.execute()
            except Exception as exc:  # Redis away: the next beat tries again; the job goes on
                log.warning("worker %s: heartbeat of job %s not sent: %s", self.name, job.id, exc)

    def teardown(self) -> None:
        untyped: Any = super()  # RQ leaves it unannotated
        untyped.teardown()
        if self.context is not None:
            self.context.close()
            self.context = None
