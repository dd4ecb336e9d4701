"""Vaults read model: the vaults of every subscription, with their settings."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import Vault
from projections.base import Projection, key_of, on_event, ts
from projections.store import Tx


class VaultsProjection(Projection):
    name = "vaults"
    topics = (get_topic(Vault.Created), get_topic(Vault.ReplicationChanged))
    owned = ("vaults",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    overwrites = (Vault.ReplicationChanged,)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}vaults (vault_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "subscription TEXT NOT NULL, region TEXT NOT NULL, resource_group TEXT NOT NULL, "
            "kind TEXT NOT NULL, replication TEXT NOT NULL, backup_goal TEXT NOT NULL, "
            "created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
        ),
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: Vault.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('vaults')} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                event.name,
                event.subscription,
                event.region,
                event.resource_group,
                event.kind.value,
                event.replication.value,
                event.backup_goal,
                ts(event.timestamp),
                event.principal,
            ),
        )

    @apply.register
    def _(self, event: Vault.ReplicationChanged, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('vaults')} SET replication = ? WHERE vault_id = ?",
            (event.replication.value, key_of(event.originator_id)),
        )
