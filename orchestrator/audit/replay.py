"""Rebuilding read models from the event history: into a fresh store, up to the live positions
(`audit replay`, which compares digests with the live read models) or up to a past instant (`as_of`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from eventsourcing.sqlite import SQLiteDatastore

from orchestrator.audit.chain import notifications
from orchestrator.errors import OrchestratorError
from projections.base import Projection
from projections.runner import PROJECTIONS
from projections.store import ReadStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# How far an event's timestamp may trail the stored order: an event is timestamped when a command
# makes it and stored when the command commits, so a later-stored event may carry an earlier time.
CLOCK_SKEW = timedelta(minutes=5)
LIVE_SNAPSHOT_TRIES = 20
REBUILD_BATCH = 5000  # events per transaction of each projection in a rebuild
PARALLEL_MIN_EVENTS = 10_000  # below this, starting processes costs more than they save
READY_TIMEOUT = 30.0  # seconds a rebuild process has to open its stores before its share is rebuilt here


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A rebuild holds thousands of decoded events at a time, and the cyclic collector's passes over
    them cost about a quarter of a replay; they hold no cycles (what they free, reference counting
    frees), so the collector waits until the rebuild is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rebuild(app: Any, store: ReadStore, *, until: datetime | None = None, stops: dict[str, int] | None = None,
            progress: Progress | None = None, only: Sequence[str] | None = None) -> int:
    """Apply the history to every projection in `store` (fresh), in batches of one transaction each:
    every event when `until` is None, else only events timestamped at or before it; each projection
    up to its position in `stops` when given. `only`: these projections, reading only their events.
    Returns how many events were read."""
    projections = [cls(app, store) for cls in PROJECTIONS if only is None or cls.name in only]
    readers: dict[str, list[int]] = {}  # topic -> the projections (by index) that apply its events
    for index, projection in enumerate(projections):
        for topic in projection.topics:
            readers.setdefault(topic, []).append(index)
    head = app.recorder.max_notification_id() or 0
    stop = min(head, max(stops.values())) if stops else head
    limits = [stops.get(p.name, stop) if stops else stop for p in projections]
    floor = min(limits, default=0)  # every projection applies the events up to here
    read = 0
    batches: list[list[tuple[Any, int]]] = [[] for _ in projections]
    pending = last = 0  # events gathered since the last flush; the last notification taken into account

    def flush(last_id: int) -> None:
        for projection, mine, limit in zip(projections, batches, limits, strict=True):
            projection.process_batch(mine, min(last_id, limit))
            mine.clear()

    with _gc_paused():
        for notification in notifications(app, 1, stop, topics=sorted(readers) if only is not None else ()):
            read += 1
            wanted = readers.get(notification.topic)
            if wanted is not None and notification.id > floor:
                wanted = [i for i in wanted if notification.id <= limits[i]] or None
            if wanted is None:  # no read model applies it: it only moves their positions
                last = notification.id
                continue
            event = app.mapper.to_domain_event(notification)
            if until is not None and event.timestamp > until:
                if event.timestamp > until + CLOCK_SKEW:
                    break
                continue
            last = notification.id
            for index in wanted:
                batches[index].append((event, notification.id))
            pending += 1
            if pending >= REBUILD_BATCH:
                flush(notification.id)
                pending = 0
                if progress:
                    progress(notification.id, stop)
        if last:
            flush(last)
    if progress:
        progress(stop, stop)
    return read


class ScratchStore:
    """A fresh SQLite read store in a temporary directory, removed on close."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="backup-readmodels-")
        self.path = Path(self._dir.name) / "readmodels.sqlite"
        self.store = ReadStore.sqlite(self.path)

    def part(self, index: int) -> Path:
        """A file beside the store for one rebuild process's read models."""
        return self.path.with_name(f"part-{index}.sqlite")

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


def topic_counts(app: Any, stop: int) -> dict[str, int]:
    """How many events of each topic the log holds up to notification `stop` (one scan)."""
    recorder = app.recorder
    if isinstance(recorder.datastore, SQLiteDatastore):
        statement: Any = f"SELECT topic, COUNT(*) AS n FROM {recorder.events_table_name} WHERE rowid <= ? GROUP BY topic"
    else:
        from psycopg.sql import SQL, Identifier

        statement = SQL("SELECT topic, COUNT(*) AS n FROM {schema}.{table} WHERE notification_id <= %s GROUP BY topic").format(
            schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement, (stop,))
        return {row["topic"]: int(row["n"]) for row in cursor.fetchall()}


def partition(projections: Sequence[type[Projection]], counts: dict[str, int], parts: int) -> list[list[type[Projection]]]:
    """The projections in at most `parts` groups of about equal work, heaviest first into the group it
    adds least to. A group's work: each event of its topics read and decoded once, plus applied once
    per projection of the group that wants it (so projections sharing topics go together)."""
    def applied(cls: type[Projection]) -> int:
        return sum(counts.get(topic, 0) for topic in cls.topics)

    def work(group: list[type[Projection]]) -> int:
        topics = {topic for cls in group for topic in cls.topics}
        return sum(counts.get(topic, 0) for topic in topics) + sum(applied(cls) for cls in group)

    groups: list[list[type[Projection]]] = [[] for _ in range(max(1, parts))]
    for cls in sorted(projections, key=applied, reverse=True):
        min(groups, key=lambda group: (work([*group, cls]), len(group))).append(cls)
    return [group for group in groups if group]


def _rebuild_part(settings: Any, names: list[str], path: Path, stops: dict[str, int] | None, slot: int,
                  marks: Any, results: Connection) -> None:
    """A rebuild process: its projections' read models into the file at `path`. `marks[slot]`: -1
    until its stores are open, then the last notification it applied. Sends None, or its error."""
    from orchestrator.bootstrap import build_app

    gc.disable()  # a short-lived process: leaving exit to free what the collector would
    try:
        app = build_app(settings, create_tables=False, pre_ping=False)
        store = ReadStore.sqlite(path)
        marks[slot] = 0
        try:
            rebuild(app, store, stops=stops, only=names, progress=lambda done, _total: marks.__setitem__(slot, done))
        finally:
            store.close()
            app.close()
        results.send(None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it with the names
        results.send(f"{type(exc).__name__}: {exc}")
    finally:
        results.close()


def rebuild_scratch(app: Any, settings: Any, scratch: ScratchStore, *, until: datetime | None = None,
                    stops: dict[str, int] | None = None, progress: Progress | None = None) -> int:
    """`rebuild` into a scratch store. A whole history (no `until`) long enough to gain from it is
    split over up to `settings.replay_processes` processes, each rebuilding some read models into a
    file of its own, merged after. Returns how many events were read (for the split rebuild, how
    many the log holds up to its end)."""
    processes = settings.replay_processes or os.cpu_count() or 1
    head = app.recorder.max_notification_id() or 0
    stop = min(head, max(stops.values())) if stops else head
    if (until is not None or processes < 2 or stop < PARALLEL_MIN_EVENTS
            or "fork" not in mp.get_all_start_methods()):
        return rebuild(app, scratch.store, until=until, stops=stops, progress=progress)
    counts = topic_counts(app, stop)
    if sum(counts.values()) < PARALLEL_MIN_EVENTS:
        return rebuild(app, scratch.store, until=until, stops=stops, progress=progress)
    groups = partition(PROJECTIONS, counts, processes)
    _run_parts(app, settings, scratch, groups, stops, stop, progress)
    _merge(scratch, groups)
    if progress:
        progress(stop, stop)
    return sum(counts.values())


def _run_parts(app: Any, settings: Any, scratch: ScratchStore, groups: list[list[type[Projection]]],
               stops: dict[str, int] | None, stop: int, progress: Progress | None) -> None:
    """One process per group, forked (they start in milliseconds with everything imported; each opens
    its own connections). A process that has not opened its stores within READY_TIMEOUT (a lock held
    by another thread at the fork) is stopped and its share rebuilt in this process."""
    context = mp.get_context("fork")
    marks = context.Array("q", [-1] * len(groups), lock=False)
    names = [[cls.name for cls in group] for group in groups]
    pipes = [context.Pipe(duplex=False) for _ in groups]
    workers = [context.Process(target=_rebuild_part, name=f"replay-{i}", daemon=True,
                               args=(settings, names[i], scratch.part(i), stops, i, marks, pipes[i][1]))
               for i in range(len(groups))]
    started = time.monotonic()
    done: dict[int, str | None] = {}
    try:
        for worker, (_, sender) in zip(workers, pipes, strict=True):
            worker.start()
            sender.close()  # the child's end: the parent's copy closed, so a dead child reads as end of file
        for cls in PROJECTIONS:  # the tables the parts are merged into, made while the processes work
            cls.ensure_schema(scratch.store)
        while len(done) < len(workers):
            ready = set(wait([pipes[slot][0] for slot in range(len(workers)) if slot not in done], timeout=0.25))
            for slot in range(len(workers)):
                receiver = pipes[slot][0]
                if slot in done:
                    continue
                if receiver in ready:
                    try:
                        done[slot] = receiver.recv()
                    except EOFError:
                        workers[slot].join()
                        done[slot] = f"the process ended with exit code {workers[slot].exitcode}"
                elif marks[slot] < 0 and time.monotonic() - started > READY_TIMEOUT:
                    workers[slot].kill()
                    workers[slot].join()
                    scratch.part(slot).unlink(missing_ok=True)
                    log.warning("replay process %d did not start; rebuilding %s here", slot, ", ".join(names[slot]))
                    with closing(ReadStore.sqlite(scratch.part(slot))) as store:
                        rebuild(app, store, stops=stops, only=names[slot])
                    done[slot] = None
            if progress:
                progress(min(stop if slot in done else max(marks[slot], 0) for slot in range(len(workers))), stop)
    finally:
        for worker, (receiver, sender) in zip(workers, pipes, strict=True):
            if worker.pid is not None:  # started
                if worker.is_alive():
                    worker.kill()
                worker.join()
            receiver.close()
            sender.close()
    failed = {slot: error for slot, error in done.items() if error}
    if failed:
        raise OrchestratorError("ReplayFailed", "; ".join(
            f"rebuilding {', '.join(names[slot])}: {error}" for slot, error in sorted(failed.items())))


def _merge(scratch: ScratchStore, groups: list[list[type[Projection]]]) -> None:
    """Copy each process's read models and positions into the scratch store, in one transaction."""
    store = scratch.store
    with closing(sqlite3.connect(scratch.path, isolation_level=None)) as db:
        for index, group in enumerate(groups):
            db.execute("ATTACH DATABASE ? AS part", (str(scratch.part(index)),))
            db.execute("BEGIN")
            for cls in group:
                for table in cls.owned:
                    db.execute(f"INSERT INTO main.{store.t(table)} SELECT * FROM part.{store.t(table)}")
                db.execute(f"INSERT OR REPLACE INTO main.{store.t('follower_positions')} "
                           f"SELECT * FROM part.{store.t('follower_positions')} WHERE follower = ?", (cls.name,))
            db.execute("COMMIT")
            db.execute("DETACH DATABASE part")
            scratch.part(index).unlink()


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


def replay(app: Any, settings: Any, store: ReadStore, progress: Progress | None = None,
           max_differences: int = 50) -> ReplayReport:
    """Rebuild every read model from scratch into a fresh store, up to where the live ones are, and
    compare: a digest per table, and the rows that differ."""
    positions, live_rows = live_snapshot(store)
    scratch = ScratchStore()
    try:
        started = time.perf_counter()
        events = rebuild_scratch(app, settings, scratch, stops=positions, progress=progress)
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
