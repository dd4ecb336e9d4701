"""The rq worker class of distributed workers: `rq worker jobs --worker-class workers.worker.PreloadedWorker`.

RQ forks a work horse per job from the worker process. Whatever the worker process has loaded
before the fork, each horse starts with: the application's modules (with the plain `Worker`, every
horse imported them again, about a CPU-second per job), the PostgreSQL driver when the event store is
PostgreSQL (imported on first use otherwise: 50 ms per horse), and the fabric inventory as last
parsed (refreshed here before each fork when the file changed, so a horse does not parse it again).
"""

from __future__ import annotations

import logging
from typing import Any

from rq.worker import Worker

import workers.tasks  # noqa: F401  (imported for the horses to inherit)
from orchestrator.config import load_settings
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import load_inventory

log = logging.getLogger(__name__)


class PreloadedWorker(Worker):
    """RQ's forking worker, with the application imported and the inventory read before each fork."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        preload_store_driver()

    def execute_job(self, job: Any, queue: Any) -> None:
        preload_inventory()
        super().execute_job(job, queue)


def preload_store_driver() -> None:
    """Import the PostgreSQL modules once here rather than in every horse (they connect there)."""
    try:
        settings = load_settings()
    except OrchestratorError:
        return  # the job reports a bad setting with its code
    if settings.event_store == "postgres":
        import eventsourcing.postgres  # noqa: F401
        import psycopg_pool  # noqa: F401


def preload_inventory() -> None:
    """Parse the inventory in this process if it changed since the last time (a stat otherwise).
    A bad or missing inventory is left for the job, which reports it with its code."""
    try:
        load_inventory(load_settings().fabric_path)
    except OrchestratorError as exc:
        log.debug("inventory not preloaded: %s", exc)
