"""Read-model storage on SQLite or PostgreSQL, with follower positions kept beside the rows.

A projection writes its rows and its new position in one transaction, so each event is applied
exactly once, whatever crashes in between.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.sqlite import SQLiteDatastore

from orchestrator.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from eventsourcing.postgres import PostgresDatastore

DDL_LOCK = 0x6261636B7570  # "backup": the advisory lock key for schema changes


class Cursor(Protocol):
    def execute(self, statement: Any, params: Any = ...) -> Any: ...
    def executemany(self, statement: Any, params: Any) -> Any: ...
    def fetchall(self) -> Any: ...
    def fetchone(self) -> Any: ...


class Tx:
    """A transaction's cursor that takes `?` placeholders on both databases (`for_dialect` gives the
    class for one)."""

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self.notification_id = 0  # of the event being applied, for views that keep it

    @staticmethod
    def for_dialect(dialect: str) -> type[Tx]:
        return SQLiteTx if dialect == "sqlite" else Tx

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._cursor.execute(sql.replace("?", "%s"), params)

    def flush(self) -> None:
        """Run what the transaction holds back (nothing here)."""

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cursor.fetchall()]

    def one(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return dict(row) if row is not None else None


class SQLiteTx(Tx):
    """SQLite takes `?` as it is."""

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._cursor.execute(sql, params)


class SQLiteRunsTx(SQLiteTx):
    """Runs of one statement executed back to back go to SQLite together (`executemany`: one call
    and one prepared statement for the run), for a rebuild that writes thousands of rows in a
    transaction. Statements still run in their order: a different statement, a read (`one`,
    `rows`) or the end of the transaction runs the run held back first."""

    def __init__(self, cursor: Cursor) -> None:
        super().__init__(cursor)
        self._statement = ""
        self._run: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if sql != self._statement:
            self.flush()
            self._statement = sql
        self._run.append(params)

    def flush(self) -> None:
        run, self._run = self._run, []
        if len(run) == 1:
            self._cursor.execute(self._statement, run[0])  # a query too (executemany takes only writes)
        elif run:
            self._cursor.executemany(self._statement, run)
        self._statement = ""

    def rows(self) -> list[dict[str, Any]]:
        self.flush()
        return super().rows()

    def one(self) -> dict[str, Any] | None:
        self.flush()
        return super().one()


class ReadStore:
    def __init__(
        self,
        datastore: SQLiteDatastore | PostgresDatastore,
        dialect: Literal["sqlite", "postgres"],
        schema: str = "",
    ) -> None:
        self.datastore = datastore
        self.dialect = dialect
        self.prefix = f"{schema}." if schema else ""
        self._tx = Tx.for_dialect(dialect)
        self._create(
            f"CREATE TABLE IF NOT EXISTS {self.t('follower_positions')} ("
            "follower TEXT PRIMARY KEY, notification_id BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.t('view_versions')} (view TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )

    @classmethod
    def sqlite(cls, path: Path | str) -> ReadStore:
        """A store in the SQLite file at `path`, or at a URI (`file:name?mode=memory&cache=shared`:
        in this process's memory, shared by its connections)."""
        return cls(SQLiteDatastore(str(path), lock_timeout=30), "sqlite")

    @classmethod
    def postgres(cls, **connect: Any) -> ReadStore:
        from eventsourcing.postgres import PostgresDatastore  # psycopg only where PostgreSQL is used

        schema = connect.pop("schema", "public")
        datastore = PostgresDatastore(schema=schema, pool_size=1, max_overflow=4, pre_ping=True, **connect)
        return cls(datastore, "postgres", schema)

    def t(self, name: str) -> str:
        internal = name in ("follower_positions", "view_versions")
        return f"{self.prefix}{name}" if internal else f"{self.prefix}rm_{name}"

    @contextmanager
    def ddl_transaction(self) -> Iterator[Tx]:
        """A transaction for schema changes. On PostgreSQL, processes starting together take turns
        (CREATE TABLE IF NOT EXISTS is not safe against itself)."""
        with self.transaction() as tx:
            if self.dialect == "postgres":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (DDL_LOCK,))
            yield tx

    def _create(self, *statements: str) -> None:
        with self.ddl_transaction() as tx:
            for statement in statements:
                tx.execute(statement)

    def ensure_version(self, view: str, version: int, tables: list[str]) -> None:
        """When a view's stored version differs, drop its tables and position so that it is rebuilt
        from the whole event history."""
        versions = self.t("view_versions")
        with self.ddl_transaction() as tx:
            tx.execute(f"SELECT version FROM {versions} WHERE view = ?", (view,))
            row = tx.one()
            if row is not None and int(row["version"]) == version:
                return
            for table in tables:
                tx.execute(f"DROP TABLE IF EXISTS {table}")
            tx.execute(f"DELETE FROM {self.t('follower_positions')} WHERE follower = ?", (view,))
            tx.execute(f"DELETE FROM {versions} WHERE view = ?", (view,))
            tx.execute(f"INSERT INTO {versions} (view, version) VALUES (?, ?)", (view, version))

    def create_tables(self, *statements: str) -> None:
        self._create(*statements)

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        """A cursor for one read. A PostgreSQL connection of the pool is in autocommit mode, and one
        statement sees one snapshot: no BEGIN and ROLLBACK round trips around it."""
        if self.dialect == "postgres":
            datastore = cast("PostgresDatastore", self.datastore)
            with datastore.get_connection() as connection:
                yield connection.cursor()
        else:
            with self.datastore.transaction(commit=False) as cursor:
                yield cursor

    @contextmanager
    def transaction(self, runs: bool = False) -> Iterator[Tx]:
        """A transaction, committed at the end of the block. `runs`: on SQLite, consecutive
        executions of one statement go together (`SQLiteRunsTx`), for writing many rows."""
        with self.datastore.transaction(commit=True) as cursor:
            if self.dialect == "postgres":
                # Pipeline mode: statements go out without waiting for each one's answer; a read
                # (`one`, `rows`) or the end of the block waits for what it needs. One round trip per
                # read instead of one per statement; an error still ends the transaction.
                with cast(Any, cursor).connection.pipeline():
                    yield self._tx(cursor)
            else:
                tx = SQLiteRunsTx(cursor) if runs else self._tx(cursor)
                yield tx
                tx.flush()

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a query; a store that does not answer is a retryable `ReadStoreUnavailable`."""
        try:
            with self._reading() as cursor:
                tx = self._tx(cursor)
                tx.execute(sql, params)
                return tx.rows()
        except (OperationalError, InterfaceError) as exc:
            raise ServiceUnavailableError(
                "ReadStoreUnavailable", f"the read store did not answer ({exc}); nothing was changed: retry"
            ) from None

    def position(self, follower: str) -> int:
        rows = self.fetch(
            f"SELECT notification_id FROM {self.t('follower_positions')} WHERE follower = ?",
            (follower,),
        )
        return int(rows[0]["notification_id"]) if rows else 0

    def positions(self, followers: list[str]) -> dict[str, int]:
        """Several followers' positions in one query (a follower never run is absent)."""
        marks = ", ".join("?" for _ in followers)
        rows = self.fetch(
            f"SELECT follower, notification_id FROM {self.t('follower_positions')} WHERE follower IN ({marks})",
            tuple(followers),
        )
        return {r["follower"]: int(r["notification_id"]) for r in rows}

    def versions(self, views: list[str]) -> dict[str, int]:
        """The stored table version of each view (`ensure_version`), in one query (a view never made is absent)."""
        marks = ", ".join("?" for _ in views)
        rows = self.fetch(f"SELECT view, version FROM {self.t('view_versions')} WHERE view IN ({marks})", tuple(views))
        return {r["view"]: int(r["version"]) for r in rows}

    def advance(self, tx: Tx, follower: str, notification_id: int) -> bool:
        """Move `follower` to `notification_id` inside `tx`; False if it was already there."""
        table = self.t("follower_positions")
        tx.execute(
            f"INSERT INTO {table} (follower, notification_id) VALUES (?, ?) "
            "ON CONFLICT (follower) DO UPDATE SET notification_id = excluded.notification_id "
            f"WHERE {table}.notification_id < excluded.notification_id RETURNING notification_id",
            (follower, notification_id),
        )
        return tx.one() is not None

    def wait(self, followers: list[str], notification_id: int, timeout: float) -> bool:
        """Wait until every follower has passed `notification_id`; False on timeout."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            positions = self.positions(followers)  # one query for all
            if all(positions.get(f, 0) >= notification_id for f in followers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def close(self) -> None:
        self.datastore.close()
