"""The rq worker class of distributed workers: `rq worker jobs --worker-class workers.worker.PreloadedWorker`.

RQ forks a work horse per job from the worker process. Whatever the worker process has loaded
before the fork, each horse starts with: the application's modules (with the plain `Worker`, every
horse imported them again, about a CPU-second per job), the PostgreSQL driver when the event store is
PostgreSQL (imported on first use otherwise: 50 ms per horse), and the fabric inventory as last
parsed (refreshed here before each fork when the file changed, so a horse does not parse it again).
Horses open the event store without creating tables; the worker creates any missing one at start.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.worker import Worker

import workers.tasks  # noqa: F401  (imported for the horses to inherit)
from orchestrator.bootstrap import build_app
from orchestrator.config import load_settings
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import load_inventory

log = logging.getLogger(__name__)


class PreloadedWorker(Worker):
    """RQ's forking worker, with the application imported and the inventory read before each fork."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prepare_event_store()

    def execute_job(self, job: Any, queue: Any) -> None:
        preload_inventory()
        super().execute_job(job, queue)


def prepare_event_store() -> None:
    """Once, before the first fork: import the PostgreSQL modules here rather than in every horse,
    and open the event store with table creation (then close it: horses connect for themselves), so
    that horses, which skip it, find every table even when this worker starts before the services."""
    try:
        settings = load_settings()
        if settings.event_store == "postgres":
            import eventsourcing.postgres  # noqa: F401
            import psycopg_pool  # noqa: F401
        build_app(settings).close()
    except OrchestratorError as exc:  # a bad setting, or the store not up yet: the jobs report it
        log.warning("event store not prepared before the first job: %s", exc)


def preload_inventory() -> None:
    """Parse the inventory in this process if it changed since the last time (a stat otherwise).
    A bad or missing inventory is left for the job, which reports it with its code."""
    try:
        load_inventory(load_settings().fabric_path)
    except OrchestratorError as exc:
        log.debug("inventory not preloaded: %s", exc)
