"""The rq worker's PostgreSQL session, lent to each work horse in turn: horses that leave it idle pass
it on; a horse killed mid-job, or leaving a transaction open, makes the worker open a new one."""

from __future__ import annotations

import logging
import os
import select
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bootstrap import build_app
from orchestrator.config import Settings, load_settings
from tests.helpers import PG_DB, PG_HOST, PG_USER
from workers import handoff
from workers.worker import prepare_event_store

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, fabric: Path, pg_schema: str) -> Settings:
    settings = load_settings(
        {},
        data_dir=tmp_path / "data",
        fabric=fabric,
        event_store="postgres",
        postgres_host=PG_HOST,
        postgres_user=PG_USER,
        postgres_dbname=PG_DB,
        postgres_schema=pg_schema,
    )
    prepare_event_store(settings)
    return settings


@pytest.fixture
def lender(settings: Settings) -> Iterator[handoff.SessionLender]:
    lender = handoff.SessionLender(settings)
    yield lender
    lender.close()


def horse(lender: handoff.SessionLender, settings: Settings, job: Callable[[Any], None] = lambda app: None) -> int:
    """Fork a horse as rq does: it opens the store as horses do, reports its server process id through
    a pipe, runs `job` and marks the session. Returns the server process id it used."""
    lender.before_fork()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            app = build_app(settings, create_tables=False, pre_ping=False)
            with app.recorder.datastore.get_connection() as conn:
                os.write(write, str(conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]).encode())
            job(app)
            lender.horse_done()
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        backend = int(pipe.read() or 0)
    os.waitpid(pid, 0)
    lender.after_horse()
    return backend


def test_idle_sessions_pass_from_horse_to_horse(lender: handoff.SessionLender, settings: Settings) -> None:
    first = horse(lender, settings)
    assert first and lender.conn is not None and first == lender.conn.info.backend_pid
    # a horse that stores and reads events through the session leaves it idle: the next one gets it
    assert horse(lender, settings, lambda app: app.recorder.select_notifications(start=1, limit=10)) == first
    assert horse(lender, settings) == first
    assert lender.sessions == 1


def test_a_horse_killed_mid_job_or_leaving_a_transaction_open_gets_the_session_replaced(
    lender: handoff.SessionLender, settings: Settings
) -> None:
    first = horse(lender, settings)

    def killed(app: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    assert horse(lender, settings, killed) == first  # it used the session, then died
    second = horse(lender, settings)
    assert second not in (0, first) and lender.sessions == 2

    def left_open(app: Any) -> None:
        conn = app.recorder.datastore.pool.getconn()
        conn.execute("BEGIN")
        conn.execute("SELECT 1")

    assert horse(lender, settings, left_open) == second
    third = horse(lender, settings)
    assert third not in (0, first, second) and lender.sessions == 3
    assert horse(lender, settings) == third


def test_a_session_serves_horses_for_a_limited_time(
    lender: handoff.SessionLender, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = horse(lender, settings)
    monkeypatch.setattr(handoff, "MAX_AGE", 0.0)
    assert horse(lender, settings) != first and lender.sessions == 2


def test_the_worker_never_takes_the_session_itself(lender: handoff.SessionLender, settings: Settings) -> None:
    lender.before_fork()
    app = build_app(settings, create_tables=False)  # in the worker process: a connection of its own
    try:
        with app.recorder.datastore.get_connection() as conn:
            mine = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    finally:
        app.close()
    assert lender.conn is not None and mine != lender.conn.info.backend_pid


def test_no_session_when_postgresql_is_unreachable(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workers.handoff")
    lender = handoff.SessionLender(settings.model_copy(update={"postgres_port": 1}))  # nothing listens there
    lender.before_fork()
    assert lender.conn is None and "no PostgreSQL session to lend" in caplog.text
    lender.after_horse()


def test_horses_prepare_nothing_on_the_session(lender: handoff.SessionLender, settings: Settings) -> None:
    """Each statement of a horse runs in one round trip, and the next horse (which knows of no prepared
    statement) finds none in the session."""

    def busy(app: Any) -> None:
        for _ in range(3):
            app.recorder.select_notifications(start=1, limit=10)
            app.recorder.max_notification_id()
        with app.recorder.datastore.get_connection() as conn:
            prepared = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"]
        if prepared:
            raise AssertionError(f"{prepared} prepared statements")

    first = horse(lender, settings, busy)
    assert first and horse(lender, settings, busy) == first  # both horses ran `busy` without an error
    assert lender.sessions == 1


def test_a_session_dropped_between_horses_is_replaced_by_the_next_horse(
    lender: handoff.SessionLender, settings: Settings
) -> None:
    import psycopg

    first = horse(lender, settings)
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    assert lender.conn is not None
    poller = select.poll()  # until the backend's goodbye has reached the lent session's socket
    poller.register(lender.conn.pgconn.socket, select.POLLIN)
    assert poller.poll(10_000)
    second = horse(lender, settings, lambda app: app.recorder.select_notifications(start=1, limit=10))
    assert second not in (0, first)
