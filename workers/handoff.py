"""One PostgreSQL session lent by the rq worker process to each of its work horses in turn.

RQ forks a horse per job, and a horse that connects for itself gets a new server process whose
catalog and plan caches start cold: about 11 ms of PostgreSQL CPU and 4 ms of the horse's own per
job (bench/coldstart.py), more than a small backup's queries. So the worker process opens one
connection, exactly as the event store's pool would (the same settings and set-up), and never uses
it; each horse inherits it through the fork and its pool starts with it as its first connection.
Nothing is prepared on it (`prepare_threshold = None`): the library asks for every statement to be
prepared, which costs a round trip of its own before the statement's first run, and a horse runs
each statement once or twice; and each horse starts from the worker's copy of the driver's state,
which knows of no prepared statement, so none may be left in the session for the next one.

The connection goes to the next horse only when this one left it open and idle: the horse marks
that in a byte of memory shared with the worker as its last act. A horse killed or timed out
half-way, a transaction left open, a session the server dropped: the worker closes its copy and opens
a new one before the next fork. Only the worker process's own thread forks, and it uses the
connection only to see, between jobs, whether PostgreSQL answers (`answers`: by its socket, pinging
it only in doubt), so at most one process talks on it at a time. A session serves horses for at
most `MAX_AGE` seconds, as the pool's own connections do.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from contextlib import suppress
from typing import Any

from orchestrator.config import Settings

log = logging.getLogger(__name__)
MAX_AGE = 3600.0  # seconds a session serves horses before the worker opens a new one
RETRY_AFTER = 5.0  # seconds between attempts to open one while PostgreSQL is unreachable
CONNECT_TIMEOUT = 3  # seconds

_lent: Any = None  # the connection a horse's first pooled connection is, set before each fork
_lender_pid = 0  # the worker process, which never takes it


def _take() -> Any:
    """In a horse: the lent connection, once; None elsewhere and afterwards."""
    global _lent
    conn, _lent = _lent, None
    return conn if conn is not None and os.getpid() != _lender_pid else None


def install() -> bool:
    """Make the event store's pool start with the lent connection, in the pool before any client asks
    (inherited by horses). False, and nothing changed, if this psycopg_pool is not the one it knows."""
    from eventsourcing.postgres import ConnectionPool

    from orchestrator.pgpool import check_when_in_doubt

    try:
        from psycopg_pool.pool import AddConnection, Schedule, ShrinkPool
    except ImportError:
        log.warning("psycopg_pool has changed: horses connect for themselves")
        return False
    if getattr(ConnectionPool._start_initial_tasks, "lends", False):
        return True
    original = ConnectionPool._start_initial_tasks

    def _start_initial_tasks(self: Any) -> None:  # runs in `open`, holding the pool's lock
        conn = _take()
        if conn is not None:
            try:
                check_when_in_doubt(conn)  # no round trip unless the server has closed it
            except Exception as exc:
                log.info("lent PostgreSQL session unusable (%s); connecting", exc)
                with suppress(Exception):
                    conn.close()
                conn = None
        if conn is None:
            original(self)
            return
        self._set_connection_expiry_date(conn)
        self._pool.append(conn)  # one of the `_nconns` the pool counts; the others as psycopg_pool makes them
        for _ in range(self._nconns - 1):
            self.run_task(AddConnection(self))
        self.run_task(Schedule(self, ShrinkPool(self), self.max_idle))

    _start_initial_tasks.lends = True  # type: ignore[attr-defined]
    ConnectionPool._start_initial_tasks = _start_initial_tasks  # type: ignore[method-assign]
    return True


class SessionLender:
    """The worker process's side: a session for the next horse, checked after each one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: Any = None
        self.opened = 0.0
        self.failed_at = float("-inf")
        self.sessions = 0  # opened so far (a test looks)
        self._clean = mmap.mmap(-1, 1)  # shared with the horse: 1 = it left the session open and idle
        self.enabled = install()

    def before_fork(self) -> None:
        global _lent, _lender_pid
        if self.conn is not None and (self.conn.closed or time.monotonic() - self.opened > MAX_AGE):
            self._discard()
        if self.conn is None and self.enabled and time.monotonic() - self.failed_at > RETRY_AFTER:
            self._open()
        self._clean[0] = 0
        _lent, _lender_pid = self.conn, os.getpid()

    def horse_done(self) -> None:
        """In the horse, after its job: whether the session can go to the next one."""
        from orchestrator.pgpool import idle

        if self.conn is not None and idle(self.conn):
            self._clean[0] = 1

    def after_horse(self) -> None:
        global _lent
        _lent = None
        if self.conn is not None and self._clean[0] != 1:
            self._discard()

    def answers(self) -> bool:
        """Whether PostgreSQL answers, as cheaply as the next horse's session can tell: that session
        checked by its socket (a round trip only when in doubt), or else a new one opened (one
        attempt, `CONNECT_TIMEOUT`), kept for the next horse. In the worker process, between jobs."""
        from orchestrator.pgpool import check_when_in_doubt

        if self.conn is not None and not self.conn.closed:
            try:
                check_when_in_doubt(self.conn)
                return True
            except Exception as exc:
                log.info("the PostgreSQL session kept for the next horse is unusable: %s", exc)
        self._discard()
        self._open(quietly=True)
        return self.conn is not None

    def close(self) -> None:
        self._discard()

    def _open(self, quietly: bool = False) -> None:
        """A connection made and set up as the event store's pool makes its own (one attempt, no
        application and no retries: while PostgreSQL is down the horses report it, not this)."""
        from orchestrator.bootstrap import horse_datastore

        try:
            datastore = horse_datastore(self.settings)
            try:
                conn = datastore.pool._connect(timeout=CONNECT_TIMEOUT)
            finally:
                datastore.close()  # the pool never opened, and never held this connection
        except Exception as exc:
            log.log(
                logging.DEBUG if quietly else logging.INFO, "no PostgreSQL session to lend to the next horse: %s", exc
            )
            self.failed_at = time.monotonic()
            return
        conn._pool = None  # a horse's pool adopts it
        conn.prepare_threshold = None  # see the module's docstring
        self.conn, self.opened = conn, time.monotonic()
        self.sessions += 1

    def _discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()
