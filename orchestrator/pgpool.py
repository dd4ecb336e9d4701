"""How a pooled PostgreSQL connection is checked before use (imported only where PostgreSQL is used).

The library's pre-ping sends an empty query each time a connection leaves the pool: a round trip
before every read and every transaction, a quarter of the projections service's time in a busy
deployment. A connection the server has closed (a restart, an idle timeout, `pg_terminate_backend`)
has the server's last error message and then end-of-file waiting on its socket, and a live idle
one has nothing; so the check looks at the socket first and pings only a connection with something
to read or in a bad state, which the pool replaces when the ping fails. A statement that fails on
a connection dropped after the check is retried on a new one by the library, as before.
"""

from __future__ import annotations

import select
from typing import Any

from psycopg import Connection
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import ConnectionPool


def ping(conn: Connection[Any]) -> None:
    """The pre-ping: an empty query, which raises on a connection that does not work."""
    ConnectionPool.check_connection(conn)


def idle(conn: Connection[Any]) -> bool:
    """Open, in a good state and outside any transaction, as far as the driver knows."""
    return bool(
        not conn.closed
        and conn.pgconn.status == ConnStatus.OK
        and conn.info.transaction_status == TransactionStatus.IDLE
    )


def check_when_in_doubt(conn: Connection[Any]) -> None:
    """The pool's `check`: returns quietly for a usable connection, raises for one that is not."""
    if not idle(conn):
        ping(conn)  # raises
        return
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        ping(conn)


def check_sockets_first(datastore: Any) -> None:
    """Use `check_when_in_doubt` instead of the pre-ping in a datastore whose pool pre-pings."""
    pool = datastore.pool
    if getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = check_when_in_doubt
