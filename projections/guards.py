"""Resource guards read model: every guard, and every approval with its state (open, used,
expired). The scheduler reads it to find open approvals past their time."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain.guard import ResourceGuard as Guard
from projections.base import Projection, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx

_EVENTS = (Guard.Created, Guard.ApprovalGranted, Guard.ApprovalUsed, Guard.ApprovalExpired)


class GuardsProjection(Projection):
    name = "guards"
    version = VERSIONS["guards"]
    topics = tuple(get_topic(cls) for cls in _EVENTS)
    owned = ("guards", "guard_approvals")
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}guards (guard_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
        ),
        (
            "CREATE TABLE IF NOT EXISTS {t}guard_approvals (approval_id TEXT PRIMARY KEY, guard_id TEXT NOT NULL, "
            "guard_name TEXT NOT NULL, vault_id TEXT NOT NULL, operation TEXT NOT NULL, approved_by TEXT NOT NULL, "
            "approved_at TEXT NOT NULL, expires_at TEXT NOT NULL, state TEXT NOT NULL, used_by TEXT NOT NULL, "
            "updated_at TEXT NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS {i}guard_approvals_state ON {t}guard_approvals (state, expires_at)",
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: Guard.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('guards')} VALUES (?, ?, ?, ?)",
            (str(event.originator_id), event.name, ts(event.timestamp), event.principal),
        )

    @apply.register
    def _(self, event: Guard.ApprovalGranted, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('guard_approvals')} SELECT ?, guard_id, name, ?, ?, ?, ?, ?, 'open', '', ? "
            f"FROM {self.table('guards')} WHERE guard_id = ?",
            (
                str(event.approval_id),
                str(event.vault_id),
                event.operation.value,
                event.approved_by,
                ts(event.timestamp),
                ts(event.expires_at),
                ts(event.timestamp),
                str(event.originator_id),
            ),
        )

    @apply.register
    def _(self, event: Guard.ApprovalUsed, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('guard_approvals')} SET state = 'used', used_by = ?, updated_at = ? "
            "WHERE approval_id = ?",
            (event.used_by, ts(event.timestamp), str(event.approval_id)),
        )

    @apply.register
    def _(self, event: Guard.ApprovalExpired, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('guard_approvals')} SET state = 'expired', updated_at = ? WHERE approval_id = ?",
            (ts(event.timestamp), str(event.approval_id)),
        )
