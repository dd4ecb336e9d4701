"""Rebuilding read models from the event history: into a fresh store, up to the live positions
(`audit replay`, which compares the rows with the live read models) or up to a past instant
(`as_of`).

One pass in this process over the notification log, read through the event store's own reader
(`select_notifications`, a section at a time): each event is decoded once and handed to every read
model that applies its topic, and each section's rows and positions are written in one transaction
of a store held in memory. An event whose row writes the same aggregate's next event in the section
overwrites (a policy edited again, a job's progress reported again) is not decoded at all. The
application and the store are the caller's.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from orchestrator.audit import comparison
from orchestrator.audit.comparison import ReplayReport as ReplayReport
from orchestrator.audit.comparison import table_rows as table_rows
from projections.base import Projection
from projections.runner import PROJECTIONS
from projections.store import ReadStore

Progress = Callable[[int, int], None]
Decode = Callable[[str, bytes], Any]
# How far an event's timestamp may trail the stored order: an event is timestamped when a command
# makes it and stored when the command commits, so a later-stored event may carry an earlier time.
CLOCK_SKEW = timedelta(minutes=5)
# Notifications read, decoded and applied per transaction: small enough that a section's decoded
# events are still in the CPU's caches when they are applied and freed (2,000 cost a fifth more).
SECTION = 500


class ScratchStore:
    """A fresh SQLite read store in this process's memory (a rebuild's commits write no file), gone
    on close."""

    def __init__(self) -> None:
        self.uri = f"file:backup-readmodels-{uuid4().hex}?mode=memory&cache=shared"
        self.store = ReadStore.sqlite(self.uri)

    def close(self) -> None:
        self.store.close()


def sections(app: Any, stop: int, start: int = 1, topics: Sequence[str] = ()) -> Iterator[Sequence[Notification]]:
    """The stored events from `start` to `stop` (of `topics` when given), in notification order, a
    section at a time."""
    while start <= stop:
        section = app.recorder.select_notifications(start=start, limit=SECTION, stop=stop, topics=topics)
        if not section:
            return
        yield section
        start = section[-1].id + 1


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


class Rebuild:
    """The read models being rebuilt: each one's batch of events for the current section, and how far
    it goes (`limits`: its live position in a replay, else the log's end)."""

    def __init__(
        self, projections: Sequence[Projection], limits: Sequence[int], until: datetime | None, compact: bool = True
    ) -> None:
        self.projections = list(projections)
        self.limits = list(limits)
        self.until = until
        self.batches: list[list[tuple[Any, int]]] = [[] for _ in self.projections]
        self.targets: dict[str, list[list[tuple[Any, int]]]] = {}  # topic -> the batches its events go to
        for projection, batch in zip(self.projections, self.batches, strict=True):
            for topic in projection.topics:
                self.targets.setdefault(topic, []).append(batch)
        self.last = 0  # the last notification taken into account
        # Topics whose events every read model applying them may skip when the same aggregate's next
        # event is another of the topic (`Projection.overwrites`); none for a rebuild as of a past
        # instant, where that next event may be after the instant and not applied.
        self.skippable = overwritten_topics(self.projections) if compact and until is None else frozenset()
        self.horizon = min(self.limits, default=0)  # every read model applies the events up to here

    def take(self, section: Sequence[Notification], decode: Decode) -> bool:
        """Decode the section's events that a read model applies, into their batches; True when the
        history has gone past `until` (beyond the clock skew) and the rest is not read."""
        targets, until = self.targets, self.until
        superseded = self.superseded(section) if self.skippable else ()
        for notification in section:
            batches = targets.get(notification.topic)
            if batches is not None and notification.id not in superseded:
                event = decode(notification.topic, notification.state)
                if until is not None and event.timestamp > until:
                    if event.timestamp > until + CLOCK_SKEW:
                        return True
                    continue
                pair = (event, notification.id)
                for batch in batches:
                    batch.append(pair)
            self.last = notification.id  # an event no read model applies only moves their positions
        return False

    def superseded(self, section: Sequence[Notification]) -> set[int]:
        """The section's events that need not be applied: of a skippable topic, and followed in the
        section by another of that topic on the same aggregate with no other event of it between
        (read from the end: the topic of each aggregate's next event)."""
        skippable, horizon = self.skippable, self.horizon
        following: dict[Any, str] = {}  # aggregate id -> the topic of its next event, "" if none counts
        superseded: set[int] = set()
        for notification in reversed(section):
            topic, originator = notification.topic, notification.originator_id
            if topic in skippable and following.get(originator) == topic:
                superseded.add(notification.id)
            following[originator] = topic if notification.id <= horizon else ""
        return superseded

    def flush(self, store: ReadStore) -> None:
        """Every batch's rows and each read model's position, in one transaction."""
        if not self.last:
            return
        with store.transaction(runs=True) as tx:  # each read model's run of one statement in one call
            for projection, batch, limit in zip(self.projections, self.batches, self.limits, strict=True):
                applied = batch if self.last <= limit else [pair for pair in batch if pair[1] <= limit]
                projection.apply_batch(tx, applied, min(self.last, limit))
                batch.clear()


def overwritten_topics(projections: Sequence[Projection]) -> frozenset[str]:
    """The topics that every read model applying them declares among its `overwrites`."""
    declared = [{get_topic(cls) for cls in projection.overwrites} for projection in projections]
    candidates = set().union(*declared)
    return frozenset(
        topic
        for topic in candidates
        if all(
            topic in mine for projection, mine in zip(projections, declared, strict=True) if topic in projection.topics
        )
    )


def rebuild(
    app: Any,
    store: ReadStore,
    *,
    until: datetime | None = None,
    stops: dict[str, int] | None = None,
    progress: Progress | None = None,
    compact: bool = True,
) -> int:
    """Apply the history to every read model in `store` (fresh): every event when `until` is None,
    else only events timestamped at or before it; each read model up to its position in `stops` when
    given. `compact`: skip the events that a later one overwrites (`Projection.overwrites`), which
    leaves the same rows. Returns how many events were read."""
    projections = [cls(app, store) for cls in PROJECTIONS]
    head = app.recorder.max_notification_id() or 0
    stop = min(head, max(stops.values(), default=0)) if stops else head
    limits = [stops.get(p.name, stop) if stops else stop for p in projections]
    rebuilding = Rebuild(projections, limits, until, compact)
    decode = app.mapper.decoder()
    read = 0
    with _gc_paused():
        for section in sections(app, stop):
            read += len(section)
            ended = rebuilding.take(section, decode)
            rebuilding.flush(store)
            if ended:
                break
            if progress:
                progress(section[-1].id, stop)
    if progress:
        progress(stop, stop)
    return read


def replay(app: Any, store: ReadStore, progress: Progress | None = None, max_differences: int = 50) -> ReplayReport:
    """Rebuild every read model from scratch into a fresh store, up to where the live ones in `store`
    are, and compare: a digest per table, and the rows that differ."""
    positions, live = comparison.live_snapshot(store)
    scratch = ScratchStore()
    try:
        started = time.perf_counter()
        events = rebuild(app, scratch.store, stops=positions, progress=progress)
        seconds = time.perf_counter() - started
        replayed = comparison.store_rows(scratch.store)
    finally:
        scratch.close()
    return comparison.report(events, seconds, positions, live, replayed, max_differences)
