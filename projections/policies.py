"""Policies read model: each vault's policies with schedule, retention and time zone."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import BackupPolicy as P
from projections.base import Projection, dumps, ts
from projections.store import Tx


class PoliciesProjection(Projection):
    name = "policies"
    topics = tuple(get_topic(cls) for cls in (P.Created, P.Updated, P.Assigned, P.Unassigned))
    row_table, row_key, stamps_rows = "policies", "policy_id", True
    owned = ("policies",)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}policies (policy_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
            "name TEXT NOT NULL, schedule TEXT NOT NULL, retention TEXT NOT NULL, timezone TEXT NOT NULL, "
            "item_count INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL)"
        ),
    )

    @singledispatchmethod
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: P.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('policies')} (policy_id, vault_id, name, schedule, retention, timezone, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(event.originator_id), str(event.vault_id), event.name, dumps(event.schedule.model_dump(mode="json")),
             dumps(event.retention.model_dump(mode="json")), event.timezone, ts(event.timestamp)),
        )

    @apply.register
    def _(self, event: P.Updated, tx: Tx) -> None:
        self.update_row(tx, event, "schedule = ?, retention = ?, timezone = ?",
                     dumps(event.schedule.model_dump(mode="json")), dumps(event.retention.model_dump(mode="json")),
                     event.timezone)

    @apply.register
    def _(self, event: P.Assigned, tx: Tx) -> None:
        self.update_row(tx, event, "item_count = item_count + 1")

    @apply.register
    def _(self, event: P.Unassigned, tx: Tx) -> None:
        self.update_row(tx, event, "item_count = item_count - 1")
