"""The composition roots: `bootstrap` builds what a client process (and each follower service, which
is one with a thread started: orchestrator/runtime/services.py) runs on, the application, read store, queue
connection and fabric, and (embedded mode) starts the followers and workers as threads;
`worker_context` builds what an `rq worker` process hands its tasks (orchestrator/runtime/worker.py)."""

from __future__ import annotations

import base64
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Settings
from orchestrator.dispatch.dispatcher import Dispatcher, DispatcherThread, Reconciler
from orchestrator.dispatch.scheduler import Scheduler, SchedulerThread
from orchestrator.errors import SettingsError
from orchestrator.fabric.routing import Fabrics
from orchestrator.runtime.stores import open_data_dir, open_read_store, opening, take_data_dir
from orchestrator.targets import product_dirs
from orchestrator.write.application import Orchestrator
from orchestrator.write.persistence import PydanticMapper
from projections.follower import FollowerThread
from projections.runner import ensure_schemas, projection_thread
from projections.store import ReadStore
from projections.witness import Witness
from workers.context import WorkerContext
from workers.embedded import WorkerThread
from workers.keys import KeyProtector
from workers.queues import QUEUES
from workers.vaultcrypto import vault_kek

CIPHER_SAMPLE = 5  # stored rows the cipher check tries


@dataclass
class Runtime:
    settings: Settings
    app: Orchestrator
    store: ReadStore
    fabric: Fabrics
    redis: Redis
    fake_server: Any = None
    clock: Clock = field(default_factory=SystemClock)
    work_enqueued: threading.Event = field(default_factory=threading.Event)  # wakes embedded workers
    threads: list[Any] = field(default_factory=list)
    _lock: int | None = None  # the data dir's lock (SQLite)

    def worker_context(self) -> WorkerContext:
        return WorkerContext(
            app=self.app,
            fabric=self.fabric,
            principal=f"worker:{self.settings.principal}",
            vault_store_root=self.settings.vault_store_path,
            clock=self.clock,
            keys=KeyProtector(self.settings.key_protection_key),
            open_read_store=lambda: self.store,
            own_dirs=tuple(product_dirs(self.settings)),
            s3=self.settings.s3_location,
            collection_wait=self.settings.collection_wait,
            block_size=self.settings.backup_block_size,
            vault_kek=vault_kek(self.settings),
        )

    def dispatcher_thread(self) -> DispatcherThread:
        s = self.settings
        return DispatcherThread(
            Dispatcher(self.app, self.store, self.redis, s.job_timeout, self.work_enqueued.set),
            Reconciler(self.app, self.store, self.redis, s.job_timeout, self.work_enqueued.set),
            s.poll_interval,
            s.reconcile_interval,
        )

    def scheduler_thread(self) -> SchedulerThread:
        return SchedulerThread(self.scheduler(), self.settings.scheduler_interval)

    def scheduler(self) -> Scheduler:
        return Scheduler(self.app, self.store, self.clock, verify_days=self.settings.verify_interval_days)

    def projections_thread(self) -> FollowerThread:
        return projection_thread(self.app, self.store, self.settings.poll_interval, witness_of(self.settings))

    def start_services(self) -> None:
        """Followers (and, on the embedded queue, workers) as threads of this process."""
        self.threads = [self.projections_thread(), self.dispatcher_thread(), self.scheduler_thread()]
        if self.fake_server is not None:
            self.threads += [self._worker_thread(i) for i in range(self.settings.workers)]
        for thread in self.threads:
            thread.start()

    def close_workers(self) -> None:
        """Stop the embedded workers only (tests use this to hold jobs in the queue)."""
        for thread in [t for t in self.threads if isinstance(t, WorkerThread)]:
            thread.stop()
            self.threads.remove(thread)

    def _worker_thread(self, index: int) -> WorkerThread:
        import fakeredis

        connection = fakeredis.FakeRedis(server=self.fake_server)
        return WorkerThread(connection, QUEUES, self.worker_context(), f"worker-{index}", self.work_enqueued)

    def close(self) -> None:
        for thread in reversed(self.threads):
            thread.stop()
        self.threads = []
        self.app.close()
        self.store.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def bootstrap(settings: Settings) -> Runtime:
    """What a client process runs on. An SQLite event store belongs to one process at a time: its data
    dir is locked for as long as the runtime is open (DataDirInUse for a second one)."""
    with ExitStack() as undo:  # what is open so far is closed again if a later step fails
        lock = take_data_dir(settings) if settings.event_store == "sqlite" else None
        if lock is not None:
            undo.callback(os.close, lock)
        app = build_app(settings)
        undo.callback(app.close)
        store = opening(settings, lambda: open_read_store(settings))
        undo.callback(store.close)
        opening(settings, lambda: ensure_schemas(store))
        undo.pop_all()
    fake_server = None
    if settings.redis_url is None:
        import fakeredis

        fake_server = fakeredis.FakeServer()
        redis: Redis = fakeredis.FakeRedis(server=fake_server)
    else:
        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    return Runtime(
        settings,
        app,
        store,
        Fabrics.of(settings),
        redis,
        fake_server,
        _lock=lock,
    )


def build_app(settings: Settings, create_tables: bool = True, pre_ping: bool = True) -> Orchestrator:
    """The application on the configured event store. `pre_ping=False` for a process that lives
    for one short task: a pooled PostgreSQL connection is not pinged before each use (a long-lived
    process's may have been dropped while idle; the library retries a statement that fails on a
    dropped connection with a new one either way)."""
    opening(settings, lambda: open_data_dir(settings))
    env = app_env(settings, create_tables, pre_ping)
    app = opening(settings, lambda: Orchestrator(env=env))
    _check_cipher(app)
    return app


def witness_of(settings: Settings) -> Witness | None:
    """The audit witness the settings name (BACKUP_AUDIT_WITNESS, signed with BACKUP_AUDIT_KEY)."""
    if settings.audit_witness is None or settings.audit_key is None:
        return None
    return Witness(settings.audit_witness, base64.b64decode(settings.audit_key.get_secret_value()))


def app_env(settings: Settings, create_tables: bool = True, pre_ping: bool = True) -> dict[str, str]:
    """The eventsourcing library's settings for `build_app`."""
    return {
        **settings.eventsourcing_env(),
        **({} if create_tables else {"CREATE_TABLE": "n"}),
        **({} if pre_ping else {"POSTGRES_PRE_PING": "n"}),
    }


def _check_cipher(app: Orchestrator) -> None:
    """The stored events must read back with the cipher setting given, so a missing or wrong
    BACKUP_EVENT_CIPHER_KEY is one clear error at start, not a failure deep in a follower. The first
    few rows are read as stored (not through the library, which a malformed row would crash): the
    store is refused only when none of them decodes. One malformed row is `audit verify`'s to name."""
    from projections.stored_rows import read_rows

    rows = [
        row
        for row in read_rows(app, 1, app.recorder.max_notification_id() or 0, CIPHER_SAMPLE)
        if row.state[0] == "blob" and row.topic[0] == "text"
    ]
    if not rows:
        return
    decode = cast(PydanticMapper, app.mapper).decoder()
    for row in rows:
        try:
            decode(row.topic[1].decode(), row.state[1])
            return
        except Exception:
            continue
    raise SettingsError(
        "EventCipherMismatch",
        "the event store's events do not read back with this BACKUP_EVENT_CIPHER_KEY: the store was "
        "written with another key, or with none (or the key is set for a store written without one)",
        field="BACKUP_EVENT_CIPHER_KEY",
    )


def worker_context(settings: Settings) -> WorkerContext:
    """What an `rq worker` process hands its tasks, built once when it starts: the application (its
    event store's missing tables made, as a worker may start before every other service), the
    fabric, and the read store, opened on first use. ServiceUnavailableError while the event store
    does not answer; `VaultKeyMissing` without the vault key (before anything is opened)."""
    kek = vault_kek(settings)
    app = build_app(settings)
    return WorkerContext(
        app=app,
        fabric=Fabrics.of(settings),
        principal=f"worker:{settings.principal}",
        vault_store_root=settings.vault_store_path,
        clock=SystemClock(),
        keys=KeyProtector(settings.key_protection_key),
        open_read_store=lambda: opening(settings, lambda: open_read_store(settings)),
        own_dirs=tuple(product_dirs(settings)),
        s3=settings.s3_location,
        collection_wait=settings.collection_wait,
        block_size=settings.backup_block_size,
        vault_kek=kek,
    )
