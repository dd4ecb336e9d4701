"""The rq worker class of distributed workers: `rq worker jobs --serializer json --worker-class
workers.worker.PreloadedWorker` (JSON whatever the command line says, and only our tasks: see
`workers.queues.TaskWorker`; it takes no job while its event store does not answer).

RQ forks a work horse per job from the worker process. Whatever the worker process has loaded
before the fork, each horse starts with: the application's modules (with the plain `Worker`, every
horse imported them again, about a CPU-second per job), the PostgreSQL driver when the event store is
PostgreSQL (imported on first use otherwise: 50 ms per horse), and the fabric inventory as last
parsed (refreshed here before each fork when the file changed, so a horse does not parse it again),
and, on PostgreSQL, a server session already warmed by the horses before it (workers/handoff.py).
Horses open the event store without creating tables; the worker creates any missing one at start
(or, if the store did not answer then, once it does).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, cast

from rq.worker import Worker

import workers.tasks  # noqa: F401  (imported for the horses to inherit)
from orchestrator.bootstrap import build_app
from orchestrator.config import Settings, load_settings
from orchestrator.errors import OrchestratorError, ServiceUnavailableError
from orchestrator.fabric.inventory import inventory_vms
from workers import context
from workers.handoff import SessionLender
from workers.queues import TaskWorker, refusal

log = logging.getLogger(__name__)
SQLITE_CHECK_TIMEOUT = 5.0  # seconds


class PreloadedWorker(TaskWorker, Worker):
    """RQ's forking worker, with the application imported and the inventory read before each fork."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        resolve_driver_info(self.connection)
        try:
            self.settings: Settings | None = load_settings()
        except OrchestratorError as exc:  # each job reports a bad setting with its code
            log.warning("settings not read before the first job: %s", exc)
            self.settings = None
        self.lender: SessionLender | None = None
        self.prepared = False  # the tables made and the horses' context built
        self.prepare_tried = False
        if self.settings is not None:
            if self.settings.event_store == "postgres":
                self.lender = SessionLender(self.settings)  # imports the PostgreSQL modules once, here
            warm_caches()
            if not self.stores_answer() and self.lender is not None:
                log.warning(
                    "event store not prepared before the first job: PostgreSQL does not answer "
                    "(no job is taken until it does)"
                )

    def stores_answer(self) -> bool:
        """PostgreSQL: the session kept for the next horse is usable (checked by its socket), or a new
        one opens within a few seconds. SQLite: the event store's file opens and reads. The first
        time it answers (at start, or after it did not then), the tables are made and the horses'
        context is built."""
        if self.settings is None:
            return True  # each job reports the bad setting with its code
        if self.lender is not None and not self.lender.answers():
            return False
        if not self.prepared:
            self.prepared = prepare_event_store(self.settings, quietly=self.prepare_tried)
            self.prepare_tried = True
            if self.prepared and self.lender is not None:
                prebuild_context(self.settings)
            return self.prepared
        return self.lender is not None or sqlite_answers(self.settings)  # PostgreSQL answered above

    def execute_job(self, job: Any, queue: Any) -> None:
        if self.settings is not None:
            preload_inventory(self.settings.fabric_path)
        if self.lender is None or refusal(job) is not None:  # a refused job is failed without a horse
            super().execute_job(job, queue)
            return
        self.lender.before_fork()
        try:
            super().execute_job(job, queue)
        finally:
            self.lender.after_horse()

    def perform_job(self, job: Any, queue: Any) -> bool:
        """In the horse: the job, then whether the lent session can go to the next horse."""
        try:
            return bool(super().perform_job(job, queue))
        finally:
            if self.lender is not None:
                self.lender.horse_done()


def sqlite_answers(settings: Settings) -> bool:
    """The SQLite event store's file opens (it must exist) and reads."""
    path = Path(settings.eventsourcing_env()["SQLITE_DBNAME"])
    try:
        with closing(
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=SQLITE_CHECK_TIMEOUT)
        ) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        log.debug("SQLite event store check failed: %s", exc)
        return False
    return True


def prepare_event_store(settings: Settings, quietly: bool = False) -> bool:
    """Before the first fork: import the PostgreSQL modules here rather than in every horse, and
    open the event store with table creation (then close it: horses connect for themselves), so
    that horses, which skip it, find every table even when this worker starts before the services.
    False when the store did not answer (the worker tries again before its next job)."""
    if settings.event_store == "postgres":
        import eventsourcing.postgres  # noqa: F401
        import psycopg_pool  # noqa: F401
    try:
        build_app(settings).close()
    except ServiceUnavailableError as exc:  # the store not up yet: no job is taken until it is
        log.log(logging.DEBUG if quietly else logging.WARNING, "event store not prepared before the first job: %s", exc)
        return False
    except OrchestratorError as exc:  # a setting (the cipher key, say): each job reports it with its code
        log.warning("event store not prepared: %s", exc)
    return True


def prebuild_context(settings: Settings) -> None:
    """Build the horses' context here, once: the application (its recorders' SQL statements, mapper and
    checks, about a fifth of a small job's CPU when each horse builds its own) with a connection pool
    this process never opens, so each horse opens its own copy (starting with the lent session).
    PostgreSQL only: an SQLite connection must not cross a fork. If it cannot be built now, each
    horse builds its own as before."""
    from orchestrator.bootstrap import horse_datastore, worker_context_from_env

    try:
        ctx = worker_context_from_env(settings)
        datastore = cast(Any, ctx.app.recorder).datastore
        fresh = horse_datastore(settings).pool  # not opened
        datastore.pool.close()  # the one building the application opened (and its threads)
        datastore.pool = fresh
    except Exception as exc:
        log.warning("horses' context not built before the first job: %s", exc)
        return
    context.inherit(ctx)


def warm_caches() -> None:
    """Fill, once in the worker process, the caches each horse would otherwise fill for itself and
    throw away: the signatures the eventsourcing library reads (and caches per process) to turn an
    event-decorated method call into an event and back, pydantic's model signatures, the PostgreSQL
    driver's array-quoting pattern. Performance only: a cache left cold is filled on first use."""
    import eventsourcing.domain as es

    from orchestrator import domain

    spec = getattr(es, "_spec_filter_kwargs_for_method_params", None)
    functions = getattr(es, "decorated_funcs", {})
    if spec is None:
        return
    for event_cls, func in list(functions.items()):
        spec(func)
        spec(event_cls)
    for aggregate in (getattr(domain, name) for name in domain.__all__):
        spec(aggregate.__base_init__)
        spec(aggregate.__init__)
        for value in vars(aggregate).values():
            if isinstance(value, type) and hasattr(value, "model_fields"):
                spec(value)
    if "psycopg" in sys.modules:
        from psycopg import sql

        sql.quote(["a,b"])  # compiles the array dumper's quoting pattern


def resolve_driver_info(connection: Any) -> None:
    """redis-py 8 tells the server its name and version on every new connection, and looks the
    version up in the installed package's metadata each time (2-3 ms of CPU); each horse's first
    command opens a new connection. Looked up once here, for the horses to inherit. Skipped when the
    connection sets its own, or on a redis-py without `DriverInfo` (which looks it up at import)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:
        return
    kwargs = connection.connection_pool.connection_kwargs
    if not {"driver_info", "lib_name", "lib_version"} & kwargs.keys():
        kwargs["driver_info"] = DriverInfo()


def preload_inventory(path: Path) -> None:
    """Parse and index the inventory in this process if it changed since the last time (a stat
    otherwise); a horse checks the disk images of the VM it works on. A bad or missing inventory is
    left for the job, which reports it with its code."""
    try:
        inventory_vms(path)
    except OrchestratorError as exc:
        log.debug("inventory not preloaded: %s", exc)
