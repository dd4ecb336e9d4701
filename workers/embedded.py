"""RQ SimpleWorkers as threads on an in-process fakeredis server (the embedded mode).

RQ's workers install signal handlers and time jobs out with SIGALRM, both main-thread only; these
overrides are private RQ hooks, so the RQ range is pinned and tests run this path.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty

from workers import context
from workers.outages import event_store_answers
from workers.queues import TaskWorker

log = logging.getLogger(__name__)


class ThreadWorker(TaskWorker, SimpleWorker):
    """A SimpleWorker in a thread of the embedded runtime, on that runtime's event store."""

    death_penalty_class = TimerDeathPenalty

    def __init__(
        self, queue_names: tuple[str, ...], ctx: context.WorkerContext, stopping: threading.Event, **kwargs: Any
    ) -> None:
        super().__init__(queue_names, **kwargs)
        self.ctx = ctx
        self.stopping = stopping

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread; the runtime stops these workers itself."""

    def stores_answer(self) -> bool:
        """The runtime's event store answers a read of its head (on SQLite: the file opens and reads)."""
        return event_store_answers(self.ctx.app)

    def pause(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise StopRequested()


class WorkerThread(threading.Thread):
    def __init__(
        self,
        connection: Redis,
        queue_names: tuple[str, ...],
        ctx: context.WorkerContext,
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
        context.bind(self.ctx)
        while not self.stop_event.is_set():
            # Burst runs, so the thread notices a stop request between jobs and never blocks in Redis.
            worker = ThreadWorker(
                self.queue_names, self.ctx, self.stop_event, connection=self.connection, name=f"{self.name}-{id(self)}"
            )
            try:
                worked = worker.work(burst=True, logging_level="WARNING")
            except Exception:
                log.exception("embedded worker %s failed; restarting it", self.name)
                worked = False
            if not worked:
                # Sleep until this process enqueues work (or a second passes, for RQ's retries):
                # polling Redis from idle threads would take the GIL from the ones working.
                self.work_enqueued.wait(self.idle_wait)
                self.work_enqueued.clear()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.work_enqueued.set()
        self.join(timeout)
