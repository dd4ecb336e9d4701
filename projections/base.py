"""A projection: one method per event type it cares about, each writing rows and the new
position in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from orchestrator.follower import Follower
from projections.store import ReadStore, Tx


def ts(value: datetime) -> str:
    """Timestamps as fixed-width UTC text, so they sort and compare as strings on both databases."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Projection(Follower):
    tables: ClassVar[tuple[str, ...]] = ()  # CREATE statements; {t} table prefix, {i} index prefix
    owned: ClassVar[tuple[str, ...]] = ()  # its table names, dropped when `version` changes
    version: ClassVar[int] = 1  # bump when the tables change: the view is rebuilt from history

    def __init__(self, app: Any, store: ReadStore) -> None:
        super().__init__(app, store)
        self.ensure_schema(store)

    @classmethod
    def ensure_schema(cls, store: ReadStore) -> None:
        store.ensure_version(cls.name, cls.version, [store.t(n) for n in cls.owned])
        store.create_tables(*(s.format(t=store.prefix + "rm_", i="rm_") for s in cls.tables))

    def process(self, event: Any, notification_id: int) -> None:
        self.process_batch([(event, notification_id)], notification_id)

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """The batch's rows and the position after it, in one transaction: all or nothing."""
        with self.store.transaction() as tx:
            if self.store.advance(tx, self.name, last_id):
                for event, notification_id in events:
                    tx.notification_id = notification_id
                    self._handler(type(event))(self, event, tx)

    @classmethod
    def _handler(cls, event_type: type) -> Callable[[Any, Any, Tx], None]:
        """`apply`'s implementation for an event type, looked up once per type (a singledispatchmethod
        builds a bound wrapper on every call, which a replay of millions of events notices)."""
        cache = cls.__dict__.get("_handlers")
        if cache is None:
            cache = {}
            setattr(cls, "_handlers", cache)  # noqa: B010 - per class, not inherited
        if event_type not in cache:
            dispatcher = getattr(cls.__dict__.get("apply"), "dispatcher", None)
            cache[event_type] = (dispatcher.dispatch(event_type) if dispatcher is not None
                                 else lambda self, event, tx: self.apply(event, tx))
        return cache[event_type]  # type: ignore[no-any-return]

    def apply(self, event: Any, tx: Tx) -> None:
        """Write the rows for `event`; subclasses make this a singledispatchmethod."""
        raise NotImplementedError

    def table(self, name: str) -> str:
        return self.store.t(name)

    # The row an event's aggregate maps to: `row_table`, keyed by `row_key` = the aggregate's id.
    row_table: ClassVar[str] = ""
    row_key: ClassVar[str] = ""
    stamps_rows: ClassVar[bool] = False  # whether rows carry an `updated_at` column

    def update_row(self, tx: Tx, event: Any, assignments: str, *values: Any) -> None:
        """Update the row of the event's aggregate (and its `updated_at`, where rows have one)."""
        if self.stamps_rows:
            assignments, values = f"{assignments}, updated_at = ?", (*values, ts(event.timestamp))
        tx.execute(
            f"UPDATE {self.table(self.row_table)} SET {assignments} WHERE {self.row_key} = ?",
            (*values, str(event.originator_id)),
        )
