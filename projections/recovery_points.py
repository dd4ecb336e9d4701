"""Recovery points read model: per VM, time, consistency, tiers, expiry, sizes, and whether a
point expired or is held past its expiry (and why)."""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import RecoveryPoint as RP
from projections.base import Projection, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx


class RecoveryPointsProjection(Projection):
    name = "recovery_points"
    topics = tuple(get_topic(cls) for cls in (RP.Created, RP.RetentionChanged, RP.Held, RP.Expired, RP.Verified))
    row_table, row_key, stamps_rows = "recovery_points", "recovery_point_id", False
    owned = ("recovery_points",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    overwrites = (RP.RetentionChanged,)
    version = VERSIONS["recovery_points"]
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}recovery_points (recovery_point_id TEXT PRIMARY KEY, "
            "vault_id TEXT NOT NULL, item_id TEXT NOT NULL, vm_name TEXT NOT NULL, job_id TEXT NOT NULL, "
            "taken_at TEXT NOT NULL, consistency TEXT NOT NULL, tiers TEXT NOT NULL, expires_at TEXT NOT NULL, "
            "logical_bytes BIGINT NOT NULL, stored_bytes BIGINT NOT NULL, expired INTEGER NOT NULL DEFAULT 0, "
            "held_reason TEXT NOT NULL DEFAULT '', expiry_reason TEXT NOT NULL DEFAULT '', "
            "key_vault TEXT NOT NULL DEFAULT '', last_verified_at TEXT NOT NULL DEFAULT '', "
            "verify_status TEXT NOT NULL DEFAULT '', verify_problem TEXT NOT NULL DEFAULT '')"
        ),
        "CREATE INDEX IF NOT EXISTS {i}recovery_points_vault ON {t}recovery_points (vault_id, vm_name)",
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: RP.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('recovery_points')} (recovery_point_id, vault_id, item_id, vm_name, job_id, "
            "taken_at, consistency, tiers, expires_at, logical_bytes, stored_bytes, key_vault) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                str(event.vault_id),
                str(event.item_id),
                event.vm_name,
                str(event.job_id),
                ts(event.taken_at),
                event.consistency,
                json.dumps([t.value for t in event.tiers]),
                ts(event.expires_at),
                event.logical_bytes,
                event.stored_bytes,
                event.encryption.key_vault if event.encryption else "",
            ),
        )

    @apply.register
    def _(self, event: RP.RetentionChanged, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "tiers = ?, expires_at = ?, held_reason = ''",
            json.dumps([t.value for t in event.tiers]),
            ts(event.expires_at),
        )

    @apply.register
    def _(self, event: RP.Held, tx: Tx) -> None:
        self.update_row(tx, event, "held_reason = ?", event.reason)

    @apply.register
    def _(self, event: RP.Expired, tx: Tx) -> None:
        self.update_row(tx, event, "expired = 1, held_reason = '', expiry_reason = ?", event.reason)

    @apply.register
    def _(self, event: RP.Verified, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "last_verified_at = ?, verify_status = ?, verify_problem = ?",
            ts(event.verified_at),
            "ok" if event.ok else "failed",
            "" if event.ok else f"{event.problem} ({event.block})",
        )
