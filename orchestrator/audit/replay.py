"""Rebuilding read models from the event history: into a fresh store, up to the live positions
(`audit replay`, which compares digests with the live read models) or up to a past instant (`as_of`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.audit.chain import notifications
from projections.runner import PROJECTIONS
from projections.store import ReadStore

Progress = Callable[[int, int], None]
# How far an event's timestamp may trail the stored order: an event is timestamped when a command
# makes it and stored when the command commits, so a later-stored event may carry an earlier time.
CLOCK_SKEW = timedelta(minutes=5)
LIVE_SNAPSHOT_TRIES = 20
REBUILD_BATCH = 5000  # events per transaction of each projection in a rebuild


def rebuild(app: Any, store: ReadStore, *, until: datetime | None = None, stops: dict[str, int] | None = None,
            progress: Progress | None = None) -> int:
    """Apply the history to every projection in `store` (fresh), in batches of one transaction each:
    every event when `until` is None, else only events timestamped at or before it; each projection
    up to its position in `stops` when given. Returns how many events were read."""
    projections = [cls(app, store) for cls in PROJECTIONS]
    topics = {p.name: frozenset(p.topics) for p in projections}
    head = app.recorder.max_notification_id() or 0
    stop = min(head, max(stops.values())) if stops else head
    read = 0
    batch: list[tuple[Any, Any]] = []

    def flush() -> None:
        last_id = batch[-1][1].id
        for projection in projections:
            limit = stops.get(projection.name, stop) if stops else stop
            mine = [(event, n.id) for event, n in batch if n.topic in topics[projection.name] and n.id <= limit]
            projection.process_batch(mine, min(last_id, limit))
        batch.clear()

    for notification in notifications(app, 1, stop):
        read += 1
        event = app.mapper.to_domain_event(notification)
        if until is not None and event.timestamp > until:
            if event.timestamp > until + CLOCK_SKEW:
                break
            continue
        batch.append((event, notification))
        if len(batch) >= REBUILD_BATCH:
            flush()
            if progress:
                progress(notification.id, stop)
    if batch:
        flush()
    if progress:
        progress(stop, stop)
    return read


class ScratchStore:
    """A fresh SQLite read store in a temporary directory, removed on close."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="backup-readmodels-")
        self.store = ReadStore.sqlite(Path(self._dir.name) / "readmodels.sqlite")

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


@dataclass
class TableDigest:
    rows: int
    digest: str


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str, separators=(",", ":"))


def table_rows(store: ReadStore, table: str) -> dict[str, str]:
    """A table's rows, canonical JSON keyed by their first column (every read model's key)."""
    rows = store.fetch(f"SELECT * FROM {store.t(table)}")
    return {str(next(iter(r.values()))): _canonical(r) for r in rows}


def digest(rows: dict[str, str]) -> TableDigest:
    h = hashlib.sha256()
    for key in sorted(rows):
        h.update(rows[key].encode())
        h.update(b"\n")
    return TableDigest(len(rows), h.hexdigest())


def _all_tables() -> list[str]:
    return [table for cls in PROJECTIONS for table in cls.owned]


def live_snapshot(store: ReadStore) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """The live read models' positions and rows, read while no projection moved."""
    names = [cls.name for cls in PROJECTIONS]
    for _ in range(LIVE_SNAPSHOT_TRIES):
        before = {name: store.position(name) for name in names}
        rows = {table: table_rows(store, table) for table in _all_tables()}
        if {name: store.position(name) for name in names} == before:
            return before, rows
        time.sleep(0.05)
    raise RuntimeError("the read models kept moving; run the replay when the system is quieter")


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


def replay(app: Any, store: ReadStore, progress: Progress | None = None, max_differences: int = 50) -> ReplayReport:
    """Rebuild every read model from scratch into a fresh store, up to where the live ones are, and
    compare: a digest per table, and the rows that differ."""
    positions, live_rows = live_snapshot(store)
    scratch = ScratchStore()
    try:
        started = time.perf_counter()
        events = rebuild(app, scratch.store, stops=positions, progress=progress)
        seconds = time.perf_counter() - started
        replayed_rows = {table: table_rows(scratch.store, table) for table in _all_tables()}
    finally:
        scratch.close()
    report = ReplayReport(events, seconds, positions, {t: digest(r) for t, r in live_rows.items()},
                          {t: digest(r) for t, r in replayed_rows.items()})
    for table in _all_tables():
        live, replayed = live_rows[table], replayed_rows[table]
        for key in sorted(set(live) | set(replayed)):
            if live.get(key) != replayed.get(key) and len(report.differences) < max_differences:
                report.differences.append(Difference(table, key, live.get(key), replayed.get(key)))
    return report
