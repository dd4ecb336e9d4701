"""The stores a process opens, and the data dir they live in: light on purpose (no application, no
aggregates), so that a read command that finds the read models current opens only these
(orchestrator/entry/reader.py)."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from eventsourcing.persistence import IntegrityError, InternalError, PersistenceError, ProgrammingError

from orchestrator import safefs
from orchestrator.config import APP_NAME, Settings
from orchestrator.errors import OrchestratorError, ServiceUnavailableError
from projections.store import ReadStore

log = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE_FILES = ("events.sqlite", "readmodels.sqlite")
FULL_BELOW = 64 * 1024  # free bytes under which a store that fails to open is said to be on a full disk


def open_data_dir(settings: Settings) -> Path:
    """The data dir, made private (0700; an older version made it 0755) with its SQLite files 0600
    before the library opens them (SQLite gives its journal and WAL files the database file's mode)."""
    directory = safefs.make_dirs(settings.data_dir, link_ok=True)
    safefs.tighten(directory, safefs.DIR_MODE)
    if settings.event_store == "sqlite":
        for name in SQLITE_FILES:
            path = directory / name
            try:
                os.close(safefs.create(path))
            except FileExistsError:
                safefs.tighten(path, safefs.FILE_MODE)
    return directory


def take_data_dir(settings: Settings) -> int:
    """The data dir's lock, held until the runtime closes; DataDirInUse when another process holds it."""
    directory = opening(settings, lambda: open_data_dir(settings))
    fd = safefs.open_lock(directory / "runtime.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OrchestratorError(
            "DataDirInUse",
            f"another process runs the embedded orchestrator on {settings.data_dir}; "
            "stop it, or use another BACKUP_DATA_DIR",
            field="BACKUP_DATA_DIR",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # for an operator who wants to know which process
    except OSError as exc:
        log.warning("the data dir's lock holds no process id: %s", exc)
    return fd


def opening(settings: Settings, open_: Callable[[], T]) -> T:
    for attempt in range(3):
        try:
            return open_()
        except (IntegrityError, ProgrammingError, InternalError):
            # Processes starting together race to create the same tables; the loser retries.
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
        except (PersistenceError, OSError, sqlite3.Error) as exc:
            raise ServiceUnavailableError(
                "EventStoreUnavailable",
                f"cannot open the {settings.event_store} event store: {why(settings, exc)}",
                field="BACKUP_EVENT_STORE",
            ) from None
    raise AssertionError("unreachable")


def why(settings: Settings, exc: BaseException) -> str:
    """What went wrong opening a store; a full disk under the data dir said as such (SQLite reports
    one as a disk I/O error when it cannot even create its journal)."""
    full = isinstance(exc, OSError) and safefs.is_full(exc)
    if not full and settings.event_store == "sqlite":
        with suppress(OSError):
            full = shutil.disk_usage(settings.data_dir).free < FULL_BELOW
    return f"its disk is full ({exc}): free space in {settings.data_dir}" if full else str(exc)


def open_read_store(settings: Settings) -> ReadStore:
    if settings.event_store == "sqlite":
        return ReadStore.sqlite(settings.data_dir / "readmodels.sqlite")
    return ReadStore.postgres(
        dbname=settings.postgres_dbname,
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password,
        schema=settings.postgres_schema,
    )


def event_log_head(settings: Settings) -> int:
    """The newest notification id in the event store (0 when it holds none), read through the
    library's recorder alone: no application, no mapper, no tables made."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    env = Environment(APP_NAME, {**os.environ, **settings.eventsourcing_env(), "CREATE_TABLE": "n"})
    factory = InfrastructureFactory.construct(env)
    try:
        return factory.application_recorder().max_notification_id() or 0
    finally:
        factory.close()
