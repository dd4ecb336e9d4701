"""A projection: one method per event type it cares about, each writing rows and the new
position in one transaction."""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from eventsourcing.persistence import Notification
from pydantic import BaseModel

from projections.follower import BATCH, Follower
from projections.store import ReadStore, Tx


def ts(value: datetime) -> str:
    """Timestamps as fixed-width UTC text, so they sort and compare as strings on both databases:
    2026-11-22T07:59:06.223811Z (`isoformat`, which is twice as fast as `strftime`; a replay does
    this for nearly every event)."""
    if value.utcoffset() != ZERO:  # naive (None) or another zone
        value = value.astimezone(UTC)
    text = value.isoformat()  # the fraction only when there is one, then the offset
    return f"{text[:26]}Z" if value.microsecond else f"{text[:19]}.000000Z"


ZERO = timedelta(0)


# An aggregate id as its text key, remembered: a history has many events per aggregate, and a UUID's
# `str` (a Python method) costs several times a lookup here.
key_of: Callable[[Any], str] = functools.lru_cache(maxsize=8192)(str)


def json_of(value: BaseModel) -> str:
    """A pydantic value's JSON."""
    return value.model_dump_json()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


Handler = Callable[[Any, Any, Tx], None]  # (projection, event, tx)


class on_event:  # a decorator, named as one
    """What a projection's `apply` does, by the class of the event: a plain dict from event class to
    function. `@on_event` marks the method for events it does not handle; `@apply.register`, one
    method per event class, named by its `event` parameter's annotation."""

    def __init__(self, default: Handler) -> None:
        self.default = default
        self.handlers: dict[type, Handler] = {}

    def register(self, func: Handler) -> Handler:
        self.handlers[typing.get_type_hints(func)["event"]] = func
        return func

    def handler(self, event_type: type) -> Handler:
        """The function for events of `event_type` (the nearest class registered of its bases)."""
        found = self.handlers.get(event_type)
        if found is None:
            found = next((self.handlers[c] for c in event_type.__mro__ if c in self.handlers), self.default)
            self.handlers[event_type] = found
        return found

    def __get__(self, projection: Any, owner: type | None = None) -> Callable[[Any, Tx], None]:
        def apply(event: Any, tx: Tx) -> None:
            self.handler(type(event))(projection, event, tx)

        return apply


class Projection(Follower):
    tables: ClassVar[tuple[str, ...]] = ()  # CREATE statements; {t} table prefix, {i} index prefix
    owned: ClassVar[tuple[str, ...]] = ()  # its table names, dropped when `version` changes
    version: ClassVar[int] = 1  # bump when the tables change: the view is rebuilt from history
    # True when every row it writes is keyed by the event's originator and an event reads or writes
    # no other aggregate's rows.
    by_aggregate: ClassVar[bool] = False
    apply: ClassVar[on_event]  # writes the rows for an event, inside the batch's transaction
    # Event classes whose handler only sets columns of the event's aggregate's row to values taken
    # from the event itself (no read, no other row, no column computed from what is there): when one
    # is followed by another of its class on the same aggregate, with no other event of that aggregate
    # between, the second leaves the row as though the first had never been applied, so a rebuild may
    # skip the first (orchestrator/audit/replay.py). tests/e2e/test_replay_rebuild.py holds each
    # declared class to that.
    overwrites: ClassVar[tuple[type, ...]] = ()

    def __init__(self, app: Any, store: ReadStore) -> None:
        super().__init__(app, store)
        self.ensure_schema(store)
        self._updates: dict[str, str] = {}  # update_row's statement for each assignments text
        self._handler = inspect.getattr_static(type(self), "apply").handler

    @classmethod
    def ensure_schema(cls, store: ReadStore) -> None:
        store.ensure_version(cls.name, cls.version, [store.t(n) for n in cls.owned])
        store.create_tables(*(s.format(t=store.prefix + "rm_", i="rm_") for s in cls.tables))

    def process(self, event: Any, notification_id: int) -> None:
        self.process_batch([(event, notification_id)], notification_id)

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """The batch's rows and the position after it, in one transaction: all or nothing."""
        with self.store.transaction() as tx:
            self.apply_batch(tx, events, last_id)

    def apply_batch(self, tx: Tx, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """Inside `tx`: move the position to `last_id` and write the events' rows, unless the
        position was there already (the events were applied before)."""
        if self.store.advance(tx, self.name, last_id):
            handler = self._handler
            for event, notification_id in events:
                tx.notification_id = notification_id
                handler(type(event))(self, event, tx)

    def table(self, name: str) -> str:
        return self.store.t(name)

    # The row an event's aggregate maps to: `row_table`, keyed by `row_key` = the aggregate's id.
    row_table: ClassVar[str] = ""
    row_key: ClassVar[str] = ""
    stamps_rows: ClassVar[bool] = False  # whether rows carry an `updated_at` column

    def update_row(self, tx: Tx, event: Any, assignments: str, *values: Any) -> None:
        """Update the row of the event's aggregate (and its `updated_at`, where rows have one)."""
        sql = self._updates.get(assignments)
        if sql is None:
            stamp = ", updated_at = ?" if self.stamps_rows else ""
            sql = self._updates[assignments] = (
                f"UPDATE {self.table(self.row_table)} SET {assignments}{stamp} WHERE {self.row_key} = ?"
            )
        if self.stamps_rows:
            tx.execute(sql, (*values, ts(event.timestamp), key_of(event.originator_id)))
        else:
            tx.execute(sql, (*values, key_of(event.originator_id)))


class ProjectionGroup(Follower):
    """The read models of one service followed together: each pass reads the log once for all of
    them (from the furthest behind), decodes each event once, and writes every read model's rows and
    position in one transaction. Positions stay per read model, so each one is still applied exactly
    once, and one rebuilt from scratch (a new `version`) catches up beside the others."""

    name = "projections"  # a label: the positions are the projections' own

    def __init__(self, app: Any, store: ReadStore, projections: Sequence[Projection]) -> None:
        super().__init__(app, store)
        self.projections = list(projections)
        self._topics = {p.name: frozenset(p.topics) for p in self.projections}
        self.topics = sorted(set().union(*self._topics.values()))

    def process(self, event: Any, notification_id: int) -> None:  # pragma: no cover - run_once reads for all
        raise NotImplementedError

    def run_once(self, head: int | None = None) -> int:
        if head is None:
            head = self.app.recorder.max_notification_id() or 0
        behind = self._behind(head)
        if not behind:
            return 0
        start = min(p.known_position for p in behind) + 1
        topics = sorted(set().union(*(self._topics[p.name] for p in behind)))
        batch = self.app.recorder.select_notifications(start=start, limit=BATCH, stop=head, topics=topics)
        last = batch[-1].id if len(batch) == BATCH else head  # every event of these topics up to `last` is here
        events = [(self.app.mapper.to_domain_event(n), n) for n in batch]
        with self.store.transaction() as tx:
            for projection in behind:
                projection.apply_batch(tx, self._theirs(projection, events), last)
        for projection in behind:
            projection.known_position = last
        return len(batch)

    def _behind(self, head: int) -> list[Projection]:
        """The projections whose stored position is behind `head` (read only for those that this
        process does not already know to be at it)."""
        maybe = [p for p in self.projections if head > p.known_position]
        if maybe:
            stored = self.store.positions([p.name for p in maybe])
            for projection in maybe:
                projection.known_position = stored.get(projection.name, 0)
        return [p for p in maybe if head > p.known_position]

    def _theirs(self, projection: Projection, events: list[tuple[Any, Notification]]) -> list[tuple[Any, int]]:
        mine, after = self._topics[projection.name], projection.known_position
        return [(event, n.id) for event, n in events if n.topic in mine and n.id > after]
