"""A projection: one method per event type it cares about, each writing rows and the new
position in one transaction."""

from __future__ import annotations

import json
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
        with self.store.transaction() as tx:
            if self.store.advance(tx, self.name, notification_id):
                tx.notification_id = notification_id
                self.apply(event, tx)

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
