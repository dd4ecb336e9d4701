"""The event store's rows as they are stored, not as the library reads them (which a malformed row
would make raise): each column as (storage class, bytes), hashed the same way whatever it holds, and
inspected for what is wrong with it (`Inspector`). `audit verify`, the chain follower and the event
store's start-up check read the history this way.

This is the one module that reads the library's events table with SQL of its own, and it reads only
columns (`EXPECTED`, and the notification id). Why it cannot use `select_notifications`: that parses
each row as it reads it (the originator's id as a UUID, on SQLite from any text), so a tampered row
raises there or comes back looking well-formed, and tamper evidence must show a row as it is stored
and hash its bytes. Everything else (replay, history, the followers) reads through the library.
tests/unit/test_event_table_layout.py fails when the library's table layout changes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.sqlite import SQLiteDatastore
from pydantic import ValidationError

from orchestrator.domain.base import AggregateSnapshot, DomainEvent
from projections.follower import BATCH

# What each column should hold, as SQLite's storage classes; and how each database names them.
EXPECTED = {"originator_id": "text", "originator_version": "integer", "topic": "text", "state": "blob"}
TYPE_NAMES = {
    "sqlite": {"null": "NULL", "integer": "INTEGER", "real": "REAL", "text": "TEXT", "blob": "BLOB"},
    "postgres": {
        "null": "NULL",
        "integer": "BIGINT",
        "real": "a number with a fraction",
        "text": "TEXT",
        "blob": "BYTEA",
    },
}

Column = tuple[str, bytes]  # (storage class: null, integer, real, text or blob; its bytes, b"" for NULL)


class StoredRow(NamedTuple):
    notification_id: int
    originator_id: Column
    originator_version: Column
    topic: Column
    state: Column


def content_hash(row: StoredRow) -> str:
    """Over the originator (a UUID as its canonical text, as the library parses it), version, topic
    and state, each as stored: NULL as nothing, text as its UTF-8 bytes."""
    h = hashlib.sha256()
    originator = _originator_text(row.originator_id)
    for part in (originator.encode() if originator else row.originator_id[1], row.originator_version[1], row.topic[1]):
        h.update(part)
        h.update(b"\0")
    h.update(row.state[1])
    return h.hexdigest()


def _originator_text(column: Column) -> str:
    """A UUID's canonical text; "" for anything else."""
    try:
        return str(UUID(column[1].decode()))
    except ValueError:
        return ""


def identity(row: StoredRow) -> tuple[str, int, str]:
    """Originator, version (0 when not an integer) and topic, as the chain table and findings show them."""
    version = int(row.originator_version[1]) if row.originator_version[0] == "integer" else 0
    originator = _originator_text(row.originator_id) or row.originator_id[1].decode(errors="replace")
    return originator, version, row.topic[1].decode(errors="replace")


def dialect(app: Any) -> str:
    return "sqlite" if isinstance(app.recorder.datastore, SQLiteDatastore) else "postgres"


def read_rows(app: Any, start: int, stop: int, limit: int) -> list[StoredRow]:
    """The stored event rows from notification `start` to `stop`, at most `limit`, as they are."""
    recorder = app.recorder
    if dialect(app) == "sqlite":
        columns = ", ".join(f"typeof({name}), CAST({name} AS BLOB)" for name in EXPECTED)
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid, {columns} FROM {recorder.events_table_name} WHERE rowid >= ? "
                "AND rowid <= ? ORDER BY rowid LIMIT ?",
                (start, stop, limit),
            )
            return [StoredRow(r[0], *((r[i], r[i + 1] or b"") for i in (1, 3, 5, 7))) for r in cursor.fetchall()]
    from psycopg.rows import tuple_row
    from psycopg.sql import SQL, Identifier

    statement = SQL(
        "SELECT notification_id, originator_id::text, originator_version, topic, state FROM "
        "{schema}.{table} WHERE notification_id >= %s AND notification_id <= %s "
        "ORDER BY notification_id LIMIT %s"
    ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with (
        recorder.datastore.get_connection() as connection,
        connection.cursor(row_factory=tuple_row, binary=True) as cursor,
    ):
        cursor.execute(statement, (start, stop, limit), prepare=True)
        return [StoredRow(r[0], *map(_column, r[1:])) for r in cursor.fetchall()]


def _column(value: Any) -> Column:
    """A PostgreSQL value as (storage class, bytes), as SQLite gives them."""
    if value is None:
        return "null", b""
    if isinstance(value, bytes | bytearray | memoryview):
        return "blob", bytes(value)
    if isinstance(value, int):
        return "integer", str(value).encode()
    return ("real" if isinstance(value, float) else "text"), str(value).encode()


def stored_rows(app: Any, stop: int) -> Iterator[StoredRow]:
    """Every stored event row up to notification `stop`, in notification order, read in batches."""
    start = 1
    while start <= stop:
        batch = read_rows(app, start, stop, BATCH)
        if not batch:
            return
        yield from batch
        start = batch[-1].notification_id + 1


def event_topics() -> frozenset[str]:
    """The stored topic of every event class of the domain (a snapshot is not an event). A topic
    outside them is never resolved: resolving one imports whatever module it names."""
    found: set[str] = set()
    pending: list[type[Any]] = [DomainEvent]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "TOPIC" in vars(cls) and not issubclass(cls, AggregateSnapshot):
            found.add(vars(cls)["TOPIC"])
    return frozenset(found)


class Inspector:
    """What is wrong with a stored row, column by column, and its event when it decodes."""

    def __init__(self, app: Any) -> None:
        self.decode = app.mapper.decoder()
        self.dialect = dialect(app)
        self.names = TYPE_NAMES[self.dialect]
        self.topics = event_topics()

    def inspect(self, row: StoredRow) -> tuple[list[str], Any]:
        problems = [
            problem for name, column in zip(EXPECTED, row[1:], strict=True) if (problem := self._storage(name, column))
        ]
        originator = self._originator(row.originator_id, problems)
        version = int(row.originator_version[1]) if row.originator_version[0] == "integer" else None
        if version is not None and version < 1:
            problems.append(f"originator_version {version} is not a version (they start at 1)")
        topic = row.topic[1].decode(errors="replace")
        if row.topic[0] != "null" and topic not in self.topics:
            problems.append(f"topic {topic!r} is not an event type of this product")
        if row.state[0] == "null" or topic not in self.topics:
            return problems, None
        try:
            event = self.decode(topic, row.state[1])
        except Exception as exc:
            problems.append(f"state does not decode as {topic} ({reason(exc)})")
            return problems, None
        if originator is not None and event.originator_id != originator:
            problems.append(f"originator_id {originator} differs from the state's {event.originator_id}")
        if version is not None and event.originator_version != version:
            problems.append(f"originator_version {version} differs from the state's {event.originator_version}")
        return problems, event

    def _storage(self, name: str, column: Column) -> str:
        kind, expected = column[0], EXPECTED[name]
        if kind == "null":
            return f"{name} is NULL"
        if kind == expected:
            return ""
        shown = f" {column[1].decode(errors='replace')!r}" if name == "originator_version" else ""
        return f"{name}{shown} is stored as {self.names[kind]}, not {self.names[expected]}"

    def _originator(self, column: Column, problems: list[str]) -> UUID | None:
        if column[0] == "null":
            return None
        text = column[1].decode(errors="replace")
        try:
            parsed = UUID(text)
        except ValueError:
            problems.append(f"originator_id {text!r} is not a UUID")
            return None
        stored_form = parsed.hex if self.dialect == "sqlite" else str(parsed)
        if text != stored_form:
            problems.append(f"originator_id {text!r} is not in the form the event store writes ({stored_form})")
        return parsed


def reason(exc: Exception) -> str:
    """Why a state did not decode, without the state itself (decrypted, it may hold names)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the event'}: {e['msg']}" for e in errors[:3])
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
