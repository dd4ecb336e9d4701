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
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.sqlite import SQLiteDatastore

from orchestrator.errors import OrchestratorError, ServiceUnavailableError
from projections.base import Projection
from projections.runner import PROJECTIONS
from projections.store import ReadStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# How far an event's timestamp may trail the stored order: an event is timestamped when a command
# makes it and stored when the command commits, so a later-stored event may carry an earlier time.
CLOCK_SKEW = timedelta(minutes=5)
LIVE_SNAPSHOT_TRIES = 20
REBUILD_BATCH = 1000  # events per transaction of each projection in a rebuild
READ_BATCH = 5000  # stored events per query of a rebuild
PARALLEL_MIN_EVENTS = 10_000  # below this, starting processes costs more than they save
READY_TIMEOUT = 30.0  # seconds a rebuild process has to open its stores before its share is rebuilt here
CLOSE_TIMEOUT = 10.0  # seconds a rebuild process has to close its stores once its part is merged


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


@dataclass(frozen=True)
class Part:
    """One rebuild's share of the read models: `whole` rebuilt from all their events, `shared` (only
    projections that are `by_aggregate`) from the events of the aggregates whose ids, as text, lie in
    `bounds`: from (inclusive) and to (exclusive), None for open; `share` = (k, n) names it."""

    whole: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    bounds: tuple[str | None, str | None] = (None, None)
    share: tuple[int, int] = (0, 1)

    @property
    def names(self) -> tuple[str, ...]:
        return self.whole + self.shared


def stored(
    app: Any,
    stop: int,
    whole: Sequence[str] = (),
    shared: Sequence[str] = (),
    bounds: tuple[str | None, str | None] = (None, None),
    batch: int = READ_BATCH,
) -> Iterator[tuple[int, str, bytes, str]]:
    """(notification id, topic, state, originator id) of every stored event up to notification
    `stop` in notification order; when topics are given, only events of `whole`, and of `shared` for
    originators within `bounds`. What `select_notifications` reads, without the per-row work a rebuild
    does not need (a Notification object, the originator's id parsed: the state holds it too)."""
    recorder = app.recorder
    sqlite = isinstance(recorder.datastore, SQLiteDatastore)
    mark, among = ("?", "topic IN ({})") if sqlite else ("%s", "topic = ANY({})")
    params: list[Any] = []

    def topic_in(topics: Sequence[str]) -> str:
        if sqlite:
            params.extend(topics)
            return among.format(",".join("?" * len(topics)))
        params.append(list(topics))
        return among.format("%s")

    filters = [topic_in(whole)] if whole else []
    if shared:
        within = [topic_in(shared)]
        for bound, compare in zip(bounds, (">=", "<"), strict=True):
            if bound is not None:
                within.append(f"originator_id {compare} {mark}")
                params.append(bound)
        filters.append(f"({' AND '.join(within)})")
    where = f" AND ({' OR '.join(filters)})" if filters else ""
    if sqlite:
        statement: Any = (
            f"SELECT rowid, topic, state, originator_id FROM {recorder.events_table_name} "
            f"WHERE rowid >= ? AND rowid <= ?{where} ORDER BY rowid LIMIT ?"
        )
    else:
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT notification_id, topic, state, originator_id::text FROM {schema}.{table} "
            "WHERE notification_id >= %s AND notification_id <= %s" + where + " ORDER BY notification_id LIMIT %s"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    start = 1
    while start <= stop:
        values = [start, stop, *params, batch]
        if sqlite:
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.sqlite_cursor.row_factory = None  # plain tuples, not the library's sqlite3.Row
                cursor.execute(statement, values)
                rows = cursor.fetchall()
        else:
            from psycopg.rows import tuple_row

            with (
                recorder.datastore.get_connection() as connection,
                connection.cursor(row_factory=tuple_row, binary=True) as cursor,
            ):
                cursor.execute(statement, values, prepare=True)
                rows = [(i, topic, bytes(state), origin) for i, topic, state, origin in cursor.fetchall()]
        if not rows:
            return
        yield from rows
        start = rows[-1][0] + 1


def rebuild(
    app: Any,
    store: ReadStore,
    *,
    until: datetime | None = None,
    stops: dict[str, int] | None = None,
    progress: Progress | None = None,
    part: Part | None = None,
) -> int:
    """Apply the history to every projection in `store` (fresh), in batches of one transaction each:
    every event when `until` is None, else only events timestamped at or before it; each projection
    up to its position in `stops` when given. `part`: only its projections, reading only their
    events (its shared ones: of its share of aggregates). Returns how many events were read."""
    by_name = {cls.name: cls for cls in PROJECTIONS}
    names = part.names if part else tuple(by_name)
    projections = [by_name[name](app, store) for name in names]
    wholly = len(part.whole) if part else len(projections)  # the first `wholly` read every event of their topics
    whole_topics = {topic for p in projections[:wholly] for topic in p.topics}
    shared_topics = {topic for p in projections[wholly:] for topic in p.topics}
    readers: dict[str, list[int]] = {}  # topic -> the projections (by index) that apply all of its events read
    checked: dict[str, list[int]] = {}  # topic -> shared projections that apply its events within the share
    for index, projection in enumerate(projections):
        for topic in projection.topics:
            shared_of_whole = index >= wholly and topic in whole_topics  # read whole for another projection
            (checked if shared_of_whole else readers).setdefault(topic, []).append(index)
    low, high = part.bounds if part else (None, None)
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

    rows = (
        stored(app, stop, sorted(whole_topics), sorted(shared_topics - whole_topics), (low, high))
        if part
        else stored(app, stop)
    )
    decode = app.mapper.decoder()
    with _gc_paused():
        for notification_id, topic, state, origin in rows:
            read += 1
            wanted = readers.get(topic)
            extra = checked.get(topic)
            if extra is not None and (low is None or low <= origin) and (high is None or origin < high):
                wanted = [*(wanted or ()), *extra]
            if wanted is not None and notification_id > floor:
                wanted = [i for i in wanted if notification_id <= limits[i]] or None
            if wanted is None:  # no read model applies it: it only moves their positions
                last = notification_id
                continue
            event = decode(topic, state)
            if until is not None and event.timestamp > until:
                if event.timestamp > until + CLOCK_SKEW:
                    break
                continue
            last = notification_id
            for index in wanted:
                batches[index].append((event, notification_id))
            pending += 1
            if pending >= REBUILD_BATCH:
                flush(notification_id)
                pending = 0
                if progress:
                    progress(notification_id, stop)
        if last:
            flush(last)
    if progress:
        progress(stop, stop)
    return read


class ScratchStore:
    """A fresh SQLite read store in this process's memory (a rebuild's commits write no file), and a
    temporary directory for the files of rebuild processes; both gone on close."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="backup-readmodels-")
        self.uri = f"file:backup-readmodels-{uuid4().hex}?mode=memory&cache=shared"
        self.store = ReadStore.sqlite(self.uri)

    def part(self, index: int) -> Path:
        """A file for one rebuild process's read models."""
        return Path(self._dir.name) / f"part-{index}.sqlite"

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


def topic_counts(app: Any, stop: int) -> dict[str, int]:
    """How many events of each topic the log holds up to notification `stop` (one scan)."""
    recorder = app.recorder
    if isinstance(recorder.datastore, SQLiteDatastore):
        statement: Any = (
            f"SELECT topic, COUNT(*) AS n FROM {recorder.events_table_name} WHERE rowid <= ? GROUP BY topic"
        )
    else:
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT topic, COUNT(*) AS n FROM {schema}.{table} WHERE notification_id <= %s GROUP BY topic"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement, (stop,))
        return {row["topic"]: int(row["n"]) for row in cursor.fetchall()}


def aggregate_sizes(app: Any) -> list[tuple[str, int]]:
    """(aggregate id as text, how many events it has), in the order of the ids as text (the order
    the bounds of a Part compare in). An aggregate's versions run 1, 2, 3...: its highest is its
    size, read from the primary key's index alone (events stored since the replay began count too:
    this only weighs the parts)."""
    recorder = app.recorder
    if isinstance(recorder.datastore, SQLiteDatastore):
        statement: Any = (
            f"SELECT originator_id AS id, MAX(originator_version) AS n FROM {recorder.events_table_name} "
            "GROUP BY originator_id"
        )
    else:
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT originator_id::text AS id, MAX(originator_version) AS n FROM {schema}.{table} "
            "GROUP BY originator_id"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement)
        return sorted((str(row["id"]), int(row["n"])) for row in cursor.fetchall())


def partition(
    projections: Sequence[type[Projection]],
    counts: dict[str, int],
    parts: int,
    aggregates: Sequence[tuple[str, int]] = (),
) -> list[Part]:
    """The work in at most `parts` parts of about equal size. Projections keyed by aggregate are
    split by ranges of aggregate ids; the others go whole, heaviest first, into the part they add
    least to. Then the ranges are cut so that each part's total comes out about equal, by the
    aggregates' event counts (`aggregates`, in id order; without them, equal ranges of UUIDs). A
    part's work: each event it reads (decoded once) plus each application of it to a projection."""
    n = max(1, parts)
    split = [cls for cls in projections if cls.by_aggregate] if n > 1 else []
    whole = [cls for cls in projections if cls not in split]

    def applied(cls: type[Projection]) -> int:
        return sum(counts.get(topic, 0) for topic in cls.topics)

    def work(group: list[type[Projection]]) -> int:
        topics = {topic for cls in group for topic in cls.topics}
        return sum(counts.get(topic, 0) for topic in topics) + sum(applied(cls) for cls in group)

    groups: list[list[type[Projection]]] = [[] for _ in range(n)]
    for cls in sorted(whole, key=applied, reverse=True):
        min(groups, key=lambda group: (work([*group, cls]), len(group))).append(cls)
    if not split:
        return [Part(tuple(cls.name for cls in group)) for group in groups if group]
    shared = tuple(cls.name for cls in split)
    cuts = _cuts(
        [work(group) for group in groups],
        aggregates,
        sum(counts.get(topic, 0) for topic in {t for cls in split for t in cls.topics}) + sum(map(applied, split)),
    )
    bounds = [(cuts[k - 1] if k else None, cuts[k] if k < n - 1 else None) for k in range(n)]
    return [
        Part(tuple(cls.name for cls in group), shared, bound, (k, n))
        for k, (group, bound) in enumerate(zip(groups, bounds, strict=True))
        if group or bound[0] is None or bound[1] is None or bound[0] < bound[1]
    ]


def _cuts(loads: list[int], aggregates: Sequence[tuple[str, int]], shared_work: int) -> list[str]:
    """The n - 1 ids (as text) where the ranges of aggregates for n parts with `loads` already end,
    so that each part's load plus its range's share of `shared_work` comes out about equal."""
    n = len(loads)
    if not aggregates:
        return [str(UUID(int=k * 2**128 // n)) for k in range(1, n)]
    target = (sum(loads) + shared_work) / n
    quotas = [max(0.0, target - load) for load in loads]
    scale = sum(count for _, count in aggregates) / (sum(quotas) or 1)
    ends, reached = [], 0.0  # where each part's quota ends, in events of the shared topics
    for quota in quotas[:-1]:
        reached += quota * scale
        ends.append(reached)
    cuts: list[str] = []
    seen = 0
    for origin, count in aggregates:
        while len(cuts) < len(ends) and seen + count / 2 > ends[len(cuts)]:
            cuts.append(origin)  # this aggregate and the ones after it go to the next part
        seen += count
    # Ranges still without an end are empty: [last, last) (the last part keeps [last, None)).
    return cuts + [aggregates[-1][0]] * (len(ends) - len(cuts))


def _rebuild_part(
    settings: Any, part: Part, path: Path, stops: dict[str, int] | None, slot: int, marks: Any, results: Connection
) -> None:
    """A rebuild process: its part of the read models, rebuilt in memory, into the file at `path`.
    `marks[slot]`: -1 until its stores are open, then the last notification it applied. Sends None,
    or its error."""
    from orchestrator.bootstrap import build_app

    gc.disable()  # a short-lived process: leaving exit to free what the collector would
    try:
        app = build_app(settings, create_tables=False, pre_ping=False)
        memory = f"file:replay-part-{slot}?mode=memory&cache=shared"  # no journal, nothing written until the end
        store = ReadStore.sqlite(memory)
        marks[slot] = 0
        try:
            rebuild(app, store, stops=stops, part=part, progress=lambda done, _total: marks.__setitem__(slot, done))
            with closing(sqlite3.connect(memory, uri=True)) as db:
                db.execute("VACUUM INTO ?", (str(path),))  # one file, written once, for the parent to merge
            results.send(None)  # then the parent merges it while this process closes its connections
        finally:
            store.close()
            app.close()
    except BaseException as exc:
        with suppress(OSError):  # the parent has its answer already (closing failed after the part was sent)
            results.send(f"{type(exc).__name__}: {exc}")
    finally:
        results.close()


def rebuild_scratch(
    app: Any,
    settings: Any,
    scratch: ScratchStore,
    *,
    until: datetime | None = None,
    stops: dict[str, int] | None = None,
    progress: Progress | None = None,
) -> int:
    """`rebuild` into a scratch store. A whole history (no `until`) long enough to gain from it is
    split over up to `settings.replay_processes` processes, each rebuilding its part of the read
    models into a file of its own, merged after. Returns how many events were read (for the split
    rebuild, how many the log holds up to its end)."""
    processes = settings.replay_processes or os.cpu_count() or 1
    head = app.recorder.max_notification_id() or 0
    stop = min(head, max(stops.values())) if stops else head
    if until is not None or processes < 2 or stop < PARALLEL_MIN_EVENTS or "fork" not in mp.get_all_start_methods():
        return rebuild(app, scratch.store, until=until, stops=stops, progress=progress)
    counts = topic_counts(app, stop)
    if sum(counts.values()) < PARALLEL_MIN_EVENTS:
        return rebuild(app, scratch.store, until=until, stops=stops, progress=progress)
    parts = partition(PROJECTIONS, counts, processes, aggregate_sizes(app))
    _run_parts(app, settings, scratch, parts, stops, stop, progress)
    if progress:
        progress(stop, stop)
    return sum(counts.values())


def _describe(part: Part) -> str:
    k, n = part.share
    return ", ".join([*part.whole, *(f"{name} ({k + 1}/{n} of its aggregates)" for name in part.shared)])


def _run_parts(
    app: Any,
    settings: Any,
    scratch: ScratchStore,
    parts: list[Part],
    stops: dict[str, int] | None,
    stop: int,
    progress: Progress | None,
) -> None:
    """One process per part, forked (they start in milliseconds with everything imported; each opens
    its own connections). A process that has not opened its stores within READY_TIMEOUT (a lock held
    by another thread at the fork) is stopped and its part rebuilt in this process."""
    context = mp.get_context("fork")
    marks = context.Array("q", [-1] * len(parts), lock=False)
    pipes = [context.Pipe(duplex=False) for _ in parts]
    workers = [
        context.Process(
            target=_rebuild_part,
            name=f"replay-{i}",
            daemon=True,
            args=(settings, parts[i], scratch.part(i), stops, i, marks, pipes[i][1]),
        )
        for i in range(len(parts))
    ]
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
                    if done[slot] is None:  # merged while the other processes still work
                        _merge(scratch, slot, parts[slot])
                elif marks[slot] < 0 and time.monotonic() - started > READY_TIMEOUT:
                    workers[slot].kill()
                    workers[slot].join()
                    scratch.part(slot).unlink(missing_ok=True)
                    log.warning("replay process %d did not start; rebuilding %s here", slot, _describe(parts[slot]))
                    with closing(ReadStore.sqlite(scratch.part(slot))) as store:
                        rebuild(app, store, stops=stops, part=parts[slot])
                    _merge(scratch, slot, parts[slot])
                    done[slot] = None
            if progress:
                progress(min(stop if slot in done else max(marks[slot], 0) for slot in range(len(workers))), stop)
    finally:
        merged = len(done) == len(workers) and not any(done.values())
        for worker, (receiver, sender) in zip(workers, pipes, strict=True):
            if worker.pid is not None:  # started
                if merged:  # the processes close their stores after reporting: let them
                    worker.join(CLOSE_TIMEOUT)
                if worker.is_alive():
                    worker.kill()
                worker.join()
            receiver.close()
            sender.close()
    failed = {slot: error for slot, error in done.items() if error}
    if failed:
        raise OrchestratorError(
            "ReplayFailed",
            "; ".join(f"rebuilding {_describe(parts[slot])}: {error}" for slot, error in sorted(failed.items())),
        )


def _merge(scratch: ScratchStore, index: int, part: Part) -> None:
    """Copy a part's read models and positions into the scratch store in one transaction, and remove
    its file (a split read model's rows are disjoint between parts; its position is the furthest)."""
    store = scratch.store
    by_name = {cls.name: cls for cls in PROJECTIONS}
    positions = store.t("follower_positions")
    with closing(sqlite3.connect(scratch.uri, uri=True, isolation_level=None)) as db:
        db.execute("ATTACH DATABASE ? AS part", (str(scratch.part(index)),))
        db.execute("BEGIN")
        for name in part.names:
            for table in by_name[name].owned:
                db.execute(f"INSERT INTO main.{store.t(table)} SELECT * FROM part.{store.t(table)}")
            db.execute(
                f"INSERT INTO main.{positions} SELECT * FROM part.{positions} WHERE follower = ? "
                "ON CONFLICT (follower) DO UPDATE SET notification_id = "
                "max(notification_id, excluded.notification_id)",
                (name,),
            )
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
    raise ServiceUnavailableError(
        "ReadModelsMoving",
        "the read models kept moving while they were read; retry when "
        "the system is quieter (`audit verify --chain-only` checks the chain alone)",
    )


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


def replay(
    app: Any, settings: Any, store: ReadStore, progress: Progress | None = None, max_differences: int = 50
) -> ReplayReport:
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
    report = ReplayReport(
        events,
        seconds,
        positions,
        {t: digest(r) for t, r in live_rows.items()},
        {t: digest(r) for t, r in replayed_rows.items()},
    )
    for table in _all_tables():
        live, replayed = live_rows[table], replayed_rows[table]
        for key in sorted(set(live) | set(replayed)):
            if live.get(key) != replayed.get(key) and len(report.differences) < max_differences:
                report.differences.append(Difference(table, key, live.get(key), replayed.get(key)))
    return report
