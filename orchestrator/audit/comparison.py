"""Read models compared row by row: the live ones (read while no projection moves) against a
rebuild of them from the events (orchestrator/audit/replay.py)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ServiceUnavailableError
from projections.runner import PROJECTIONS
from projections.store import ReadStore

LIVE_SNAPSHOT_TRIES = 20

Rows = dict[str, str]  # a table's rows: canonical JSON keyed by the first column


@dataclass
class TableDigest:
    rows: int
    digest: str


@dataclass
class Difference:
    table: str
    key: str
    live: str | None  # the row as the live read model has it (None: missing there)
    replayed: str | None


@dataclass
class ReplayReport:
    events: int
    seconds: float
    positions: dict[str, int]
    live: dict[str, TableDigest]
    replayed: dict[str, TableDigest]
    differences: list[Difference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(self.live[t].digest == self.replayed[t].digest for t in self.live)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def all_tables() -> list[str]:
    """Every read model's tables."""
    return [table for cls in PROJECTIONS for table in cls.owned]


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str, separators=(",", ":"))


def table_rows(store: ReadStore, table: str) -> Rows:
    """A table's rows, canonical JSON keyed by their first column (every read model's key)."""
    rows = store.fetch(f"SELECT * FROM {store.t(table)}")
    return {str(next(iter(r.values()))): _canonical(r) for r in rows}


def store_rows(store: ReadStore) -> dict[str, Rows]:
    """Every read model table's rows."""
    return {table: table_rows(store, table) for table in all_tables()}


def digest(rows: Rows) -> TableDigest:
    h = hashlib.sha256()
    for key in sorted(rows):
        h.update(rows[key].encode())
        h.update(b"\n")
    return TableDigest(len(rows), h.hexdigest())


def live_snapshot(store: ReadStore) -> tuple[dict[str, int], dict[str, Rows]]:
    """The live read models' positions and rows, read while no projection moved."""
    names = [cls.name for cls in PROJECTIONS]
    for _ in range(LIVE_SNAPSHOT_TRIES):
        before = store.positions(names)
        rows = store_rows(store)
        if store.positions(names) == before:
            return {name: before.get(name, 0) for name in names}, rows
        time.sleep(0.05)
    raise ServiceUnavailableError(
        "ReadModelsMoving",
        "the read models kept moving while they were read; retry when "
        "the system is quieter (`audit verify --chain-only` checks the chain alone)",
    )


def differences(live: dict[str, Rows], replayed: dict[str, Rows], most: int) -> list[Difference]:
    """The rows that differ, table by table and key by key, at most `most` of them."""
    found: list[Difference] = []
    for table in all_tables():
        mine, theirs = live[table], replayed[table]
        for key in sorted(mine.keys() | theirs.keys()):
            if len(found) >= most:
                return found
            if mine.get(key) != theirs.get(key):
                found.append(Difference(table, key, mine.get(key), theirs.get(key)))
    return found


def report(
    events: int, seconds: float, positions: dict[str, int], live: dict[str, Rows], replayed: dict[str, Rows], most: int
) -> ReplayReport:
    return ReplayReport(
        events,
        seconds,
        positions,
        {t: digest(r) for t, r in live.items()},
        {t: digest(r) for t, r in replayed.items()},
        differences(live, replayed, most),
    )
