"""Vaults read model: the vaults of every subscription, with their settings."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import Vault
from projections.base import Projection, key_of, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx


class VaultsProjection(Projection):
    name = "vaults"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Vault.Created,
            Vault.ReplicationChanged,
            Vault.SoftDeleteChanged,
            Vault.ImmutabilityChanged,
            Vault.GuardAttached,
            Vault.GuardDetached,
            Vault.Deleted,
        )
    )
    version = VERSIONS["vaults"]
    owned = ("vaults",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    overwrites = (Vault.ReplicationChanged, Vault.SoftDeleteChanged, Vault.ImmutabilityChanged)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}vaults (vault_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "subscription TEXT NOT NULL, region TEXT NOT NULL, resource_group TEXT NOT NULL, "
            "kind TEXT NOT NULL, replication TEXT NOT NULL, backup_goal TEXT NOT NULL, "
            "created_at TEXT NOT NULL, created_by TEXT NOT NULL, soft_delete TEXT NOT NULL DEFAULT 'enabled', "
            "soft_delete_days INTEGER NOT NULL DEFAULT 14, immutability TEXT NOT NULL DEFAULT 'disabled', "
            "guard TEXT NOT NULL DEFAULT '')"
        ),
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: Vault.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('vaults')} (vault_id, name, subscription, region, resource_group, kind, "
            "replication, backup_goal, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    @apply.register
    def _(self, event: Vault.SoftDeleteChanged, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('vaults')} SET soft_delete = ?, soft_delete_days = ? WHERE vault_id = ?",
            (event.state.value, event.retention_days, key_of(event.originator_id)),
        )

    @apply.register
    def _(self, event: Vault.ImmutabilityChanged, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('vaults')} SET immutability = ? WHERE vault_id = ?",
            (event.state.value, key_of(event.originator_id)),
        )

    @apply.register
    def _(self, event: Vault.GuardAttached, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('vaults')} SET guard = ? WHERE vault_id = ?",
            (event.guard_name, key_of(event.originator_id)),
        )

    @apply.register
    def _(self, event: Vault.GuardDetached, tx: Tx) -> None:
        tx.execute(f"UPDATE {self.table('vaults')} SET guard = '' WHERE vault_id = ?", (key_of(event.originator_id),))

    @apply.register
    def _(self, event: Vault.Deleted, tx: Tx) -> None:
        tx.execute(f"DELETE FROM {self.table('vaults')} WHERE vault_id = ?", (key_of(event.originator_id),))
