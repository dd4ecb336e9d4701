"""A rebuild's transaction on SQLite (`ReadStore.transaction(runs=True)`): consecutive executions of one
statement go to SQLite in one `executemany`, in their order, and a read or the end of the block runs
what is held back first."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from projections.store import ReadStore, SQLiteRunsTx

INSERT = "INSERT INTO rm_t (k, v) VALUES (?, ?)"
UPDATE = "UPDATE rm_t SET v = v + ? WHERE k = ?"


class RecordingCursor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def execute(self, statement: Any, params: Any = ()) -> None:
        self.calls.append(("execute", statement, params))

    def executemany(self, statement: Any, params: Any) -> None:
        self.calls.append(("executemany", statement, list(params)))

    def fetchall(self) -> list[Any]:
        return []

    def fetchone(self) -> Any:
        self.calls.append(("fetchone", "", ()))
        return None


def test_a_run_of_one_statement_is_one_executemany_and_statements_keep_their_order() -> None:
    cursor = RecordingCursor()
    tx = SQLiteRunsTx(cursor)
    tx.execute(INSERT, ("a", 1))
    tx.execute(INSERT, ("b", 2))
    tx.execute(UPDATE, (10, "a"))
    tx.execute(INSERT, ("c", 3))
    assert cursor.calls == [("executemany", INSERT, [("a", 1), ("b", 2)]), ("execute", UPDATE, (10, "a"))]
    tx.execute("SELECT v FROM rm_t WHERE k = ?", ("a",))
    assert tx.one() is None
    assert cursor.calls[2:] == [
        ("execute", INSERT, ("c", 3)),
        ("execute", "SELECT v FROM rm_t WHERE k = ?", ("a",)),  # a query alone: executemany takes only writes
        ("fetchone", "", ()),
    ]


@pytest.fixture
def store(tmp_path: Path) -> ReadStore:
    store = ReadStore.sqlite(tmp_path / "read.db")
    store.create_tables("CREATE TABLE rm_t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return store


def test_reads_see_the_writes_before_them_and_the_block_end_writes_the_rest(store: ReadStore) -> None:
    with store.transaction(runs=True) as tx:
        for k, v in (("a", 1), ("b", 2), ("c", 3)):
            tx.execute(INSERT, (k, v))
        tx.execute(UPDATE, (10, "a"))
        tx.execute(UPDATE, (20, "a"))
        tx.execute("SELECT v FROM rm_t WHERE k = ?", ("a",))
        assert tx.one() == {"v": 31}
        tx.execute(INSERT, ("d", 4))
        tx.execute(INSERT, ("e", 5))
    assert store.fetch("SELECT k, v FROM rm_t ORDER BY k") == [
        {"k": "a", "v": 31},
        {"k": "b", "v": 2},
        {"k": "c", "v": 3},
        {"k": "d", "v": 4},
        {"k": "e", "v": 5},
    ]


def test_a_failing_run_at_the_block_end_rolls_the_whole_transaction_back(store: ReadStore) -> None:
    with pytest.raises((sqlite3.IntegrityError, IntegrityError)), store.transaction(runs=True) as tx:
        tx.execute(UPDATE, (1, "x"))
        tx.execute(INSERT, ("a", 1))
        tx.execute(INSERT, ("a", 2))  # the same key: fails when the run goes to SQLite, after the block
    assert store.fetch("SELECT k FROM rm_t") == []
