"""Policies read model: each vault's policies with schedule, retention and time zone. How many items
a policy serves is read from the items read model (projections/queries.py), which the items' own
events keep."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import BackupPolicy as P
from projections.base import Projection, json_of, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx


class PoliciesProjection(Projection):
    name = "policies"
    topics = tuple(get_topic(cls) for cls in (P.Created, P.Updated))
    row_table, row_key, stamps_rows = "policies", "policy_id", True
    owned = ("policies",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    overwrites = (P.Updated,)
    # 2: schedule and retention as pydantic writes their JSON (four times faster than json.dumps);
    # 3: no item count (the policies no longer list their items)
    version = VERSIONS["policies"]
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}policies (policy_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
            "name TEXT NOT NULL, schedule TEXT NOT NULL, retention TEXT NOT NULL, timezone TEXT NOT NULL, "
            "updated_at TEXT NOT NULL)"
        ),
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: P.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('policies')} (policy_id, vault_id, name, schedule, retention, timezone, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                str(event.vault_id),
                event.name,
                json_of(event.schedule),
                json_of(event.retention),
                event.timezone,
                ts(event.timestamp),
            ),
        )

    @apply.register
    def _(self, event: P.Updated, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "schedule = ?, retention = ?, timezone = ?",
            json_of(event.schedule),
            json_of(event.retention),
            event.timezone,
        )
