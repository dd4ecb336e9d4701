"""RQ SimpleWorkers as threads on an in-process fakeredis server (the embedded mode).

RQ's `work()` loop installs SIGINT/SIGTERM handlers, which Python allows in the main thread only,
so a thread drives its worker through RQ's public steps instead: register, then dequeue (without
blocking) and `execute_job`, heartbeat, maintenance when due; and unregister when it stops. Job
timeouts use RQ's thread-timer death penalty (its default, SIGALRM, is main-thread only too).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from workers.context import WorkerContext
from workers.outages import event_store_answers
from workers.queues import TaskWorker

log = logging.getLogger(__name__)


class ThreadWorker(TaskWorker, SimpleWorker):
    """A SimpleWorker in a thread of the embedded runtime, on that runtime's event store."""

    death_penalty_class = TimerDeathPenalty

    def __init__(
        self, queue_names: tuple[str, ...], ctx: WorkerContext, stopping: threading.Event, **kwargs: Any
    ) -> None:
        super().__init__(queue_names, **kwargs)
        self.ctx = ctx
        self.stopping = stopping

    def task_context(self) -> WorkerContext:
        return self.ctx

    def stores_answer(self) -> bool:
        """The runtime's event store answers a read of its head (on SQLite: the file opens and reads)."""
        return event_store_answers(self.ctx.app)

    def pause(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise StopRequested()

    def start(self) -> None:
        """What RQ's `work()` does before its loop, but the signal handlers and the pubsub thread
        (remote commands): the runtime stops its workers itself."""
        untyped: Any = self  # RQ leaves these unannotated
        untyped.register_birth()
        self.set_state(WorkerStatus.STARTED)

    def work_once(self) -> bool:
        """One turn of RQ's work loop: maintenance when due, then one job if there is one (waiting
        first while the event store does not answer). False when the queue was empty."""
        if self.should_run_maintenance_tasks:
            untyped: Any = self  # RQ leaves it unannotated
            untyped.run_maintenance_tasks()
        taken = self.dequeue_job_and_maintain_ttl(None)  # no timeout: does not block
        if taken is None:
            return False
        job, queue = taken
        self.execute_job(job, queue)
        self.heartbeat()
        return True


class WorkerThread(threading.Thread):
    def __init__(
        self,
        connection: Redis,
        queue_names: tuple[str, ...],
        ctx: WorkerContext,
        name: str,
        work_enqueued: threading.Event,
        idle_wait: float = 1.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.connection = connection
        self.queue_names = queue_names
        self.ctx = ctx
        self.idle_wait = idle_wait
        self.work_enqueued = work_enqueued
        self.stop_event = threading.Event()

    def run(self) -> None:
        worker = ThreadWorker(
            self.queue_names, self.ctx, self.stop_event, connection=self.connection, name=f"{self.name}-{id(self)}"
        )
        worker.start()
        try:
            while not self.stop_event.is_set():
                try:
                    worked = worker.work_once()
                except StopRequested:
                    break
                except Exception:
                    log.exception("embedded worker %s failed; going on", self.name)
                    worked = False
                if not worked:
                    # Sleep until this process enqueues work (or a second passes, for RQ's retries):
                    # polling Redis from idle threads would take the GIL from the ones working.
                    self.work_enqueued.wait(self.idle_wait)
                    self.work_enqueued.clear()
        finally:
            untyped: Any = worker  # RQ leaves it unannotated
            untyped.teardown()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.work_enqueued.set()
        self.join(timeout)
