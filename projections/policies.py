"""Policies read model: each vault's policies with schedule, retention and time zone."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import BackupPolicy as P
from projections.base import Projection, json_of, on_event, ts
from projections.store import Tx


class PoliciesProjection(Projection):
    name = "policies"
    topics = tuple(get_topic(cls) for cls in (P.Created, P.Updated, P.Assigned, P.Unassigned))
    row_table, row_key, stamps_rows = "policies", "policy_id", True
    owned = ("policies",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    version = 2  # 2: schedule and retention as pydantic writes their JSON (four times faster than json.dumps)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}policies (policy_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
            "name TEXT NOT NULL, schedule TEXT NOT NULL, retention TEXT NOT NULL, timezone TEXT NOT NULL, "
            "item_count INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL)"
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

    @apply.register
    def _(self, event: P.Assigned, tx: Tx) -> None:
        self.update_row(tx, event, "item_count = item_count + 1")

    @apply.register
    def _(self, event: P.Unassigned, tx: Tx) -> None:
        self.update_row(tx, event, "item_count = item_count - 1")
